"""Training batches end to end: our tensor pipeline vs the study's per-image PIL DataLoader.

Both produce one epoch of normalised two-view MoCo-v2 batches of corrupted images (``glo_8``
by default) from the same images:

* ours: the uint8 split tensor, the fixed corruption applied once (its cost counted in the
  epoch), then per batch: index, two augmented views, normalise (``trainables.data.batches``);
* study: a Dataset of PIL images whose ``__getitem__`` corrupts (numpy gather) and runs
  torchvision's per-image transforms twice, through a DataLoader with 2 workers.

Run: ``python benchmarks/pipeline.py [--n 10000] [--batch 256] [--corruption glo_8]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from corruptions import parse  # noqa: E402
from trainables.data.augment import build_augmentation  # noqa: E402
from trainables.data.batches import Pipeline, plan_corruption, train_batches  # noqa: E402
from trainables.data.datasets import Split, load_dataset  # noqa: E402
from trainables.seeding import generators  # noqa: E402


class StudyDataset(torch.utils.data.Dataset):
    """PIL images corrupted and augmented one at a time, as the study's ``__getitem__``."""

    def __init__(self, images: torch.Tensor, spec: str, mean, std) -> None:
        self.pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in images]
        h, w = images.shape[-2:]
        ramp = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
        self.index = parse(spec)(ramp).flatten().long().numpy()
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(w, scale=(0.08, 1.0)),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i: int):
        x = np.asarray(self.pil[i])
        h, w, c = x.shape
        img = Image.fromarray(x.reshape(h * w, c)[self.index].reshape(h, w, c))
        return self.transform(img), self.transform(img)


def study_epoch(ds: StudyDataset, batch: int, workers: int) -> int:
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=False
    )
    return sum(v1.shape[0] for v1, _ in loader)


def our_epoch(split: Split, spec: str, batch: int, mean, std) -> int:
    planned, per_batch = plan_corruption(split, parse(spec))
    pipe = Pipeline(per_batch, build_augmentation("moco_v2"), 2, mean, std)
    return sum(views[0].shape[0] for views, _ in train_batches(planned, pipe, batch, generators(0), "cpu"))


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="imagefolder:../shared/data/cifar10-jpeg")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corruption", default="glo_8")
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    split = Split(data.train.images[: args.n].clone(), data.train.labels[: args.n].clone())
    mean, std = data.mean_std()
    ds = StudyDataset(split.images, args.corruption, mean, std)
    our_epoch(split, args.corruption, args.batch, mean, std)  # warm-up (allocator, caches)
    ours = min(timed(lambda: our_epoch(split, args.corruption, args.batch, mean, std)) for _ in range(3))
    study = min(timed(lambda: study_epoch(ds, args.batch, args.workers)) for _ in range(2))
    ours_rate, study_rate = ours[1] / ours[0], study[1] / study[0]
    print(f"ours : {ours_rate:9,.0f} two-view samples/s ({ours[1]} samples in {ours[0]:.2f} s)")
    print(f"study: {study_rate:9,.0f} two-view samples/s (PIL DataLoader, {args.workers} workers)")
    emit(
        {
            "benchmark": "pipeline",
            "device": "cpu",
            "batch": args.batch,
            "corruption": args.corruption,
            "n_images": args.n,
            "threads": torch.get_num_threads(),
            "ours_samples_per_s": ours_rate,
            "study_samples_per_s": study_rate,
            "ratio": ours_rate / study_rate,
        }
    )


if __name__ == "__main__":
    main()
