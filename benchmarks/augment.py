"""Two-view MoCo v2 augmentation: our batched recipe vs kornia vs per-image PIL, same run.

All three do RandomResizedCrop(scale 0.08-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8) ->
RandomGrayscale(0.2) -> HorizontalFlip on 32x32 uint8 images and return float [0, 1]
tensors. The PIL path is what one DataLoader worker of the old pipeline did per image
(torchvision transforms on decoded PIL images), run here in this one process. Throughput
is pairs of views per second, best of a few repeats after a warm-up.
Run: ``python benchmarks/augment.py [--batches 256 512]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
from collections.abc import Callable  # noqa: E402

import kornia.augmentation as K  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import best_time, emit, sync  # noqa: E402
from trainables.data.augment import SSLRecipe  # noqa: E402


def ours_pairs(images: torch.Tensor, device: str) -> Callable[[], object]:
    """Both views of a batch with our recipe; the generator is a CPU one (module docs)."""
    recipe, generator = SSLRecipe(), torch.Generator().manual_seed(0)

    def run() -> object:
        views = recipe(images, generator), recipe(images, generator)
        sync(device)
        return views

    return run


def kornia_pairs(images: torch.Tensor, device: str) -> Callable[[], object]:
    """Both views with kornia's batched equivalent (it draws from torch's global RNG)."""
    side = images.shape[-1]
    aug = torch.nn.Sequential(
        K.RandomResizedCrop((side, side), scale=(0.08, 1.0)),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomHorizontalFlip(),
    ).to(device)

    def run() -> object:
        x = images.float().div_(255)
        views = aug(x), aug(x)
        sync(device)
        return views

    return run


def pil_pairs(images: torch.Tensor) -> Callable[[], object]:
    """Both views per image with torchvision's PIL transforms, then stacked, as a worker would."""
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in images.cpu()]
    aug = T.Compose(
        [
            T.RandomResizedCrop(images.shape[-1], scale=(0.08, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
        ]
    )
    return lambda: (torch.stack([aug(im) for im in pil]), torch.stack([aug(im) for im in pil]))


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time (s) of each function over ``rounds``, taking turns after a warm-up.

    Taking turns gives every path the same share of quiet and busy moments on a shared
    machine; best_time would run one path's repeats back to back.
    """
    best = {name: best_time(fn, repeats=1, warmup=2) for name, fn in fns.items()}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], best_time(fn, repeats=1, warmup=0))
    return best


def measure(batch: int, device: str, with_pil: bool) -> dict[str, float]:
    """Pairs per second of each path for one batch size on one device."""
    seeded = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 32, 32), generator=seeded, dtype=torch.uint8)
    images = images.to(device)
    paths = {"ours": ours_pairs(images, device), "kornia": kornia_pairs(images, device)}
    row = {f"{k}_pairs_per_s": batch / t for k, t in interleaved_best(paths, rounds=30).items()}
    if with_pil:  # PIL runs on the CPU whatever the device: measure it once, with the CPU rows
        row["pil_pairs_per_s"] = batch / best_time(pil_pairs(images), repeats=3, warmup=1)
    row["ratio"] = row["ours_pairs_per_s"] / row["kornia_pairs_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()

    torch.manual_seed(0)  # kornia and torchvision draw from the global RNG; ours does not
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = {f"{d}/{b}": measure(b, d, with_pil=d == "cpu") for d in devices for b in args.batches}
    print(f"two-view MoCo v2 augmentation, 32x32, {torch.get_num_threads()} CPU threads; pairs/s:")
    for key, r in rows.items():
        pil = f"   PIL per-image {r['pil_pairs_per_s']:9,.0f}" if "pil_pairs_per_s" in r else ""
        ours, kornia = r["ours_pairs_per_s"], r["kornia_pairs_per_s"]
        print(f"{key:>10}: ours {ours:9,.0f}   kornia {kornia:9,.0f}{pil}   ours/kornia x{r['ratio']:.1f}")
    device, batch = devices[-1], max(args.batches)
    head, cpu = rows[f"{device}/{batch}"], rows[f"cpu/{batch}"]
    emit(
        {
            "benchmark": "augment",
            "device": device,
            "batch": batch,
            "threads": torch.get_num_threads(),
            "ours_pairs_per_s": head["ours_pairs_per_s"],
            "kornia_pairs_per_s": head["kornia_pairs_per_s"],
            "pil_pairs_per_s": cpu["pil_pairs_per_s"],
            "ratio": head["ratio"],
            "ratio_vs_pil": head["ours_pairs_per_s"] / cpu["pil_pairs_per_s"],
            "rows": rows,
        }
    )


if __name__ == "__main__":
    main()
