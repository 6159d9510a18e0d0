"""Batched corruptions vs the study's per-image path, on the same 10k images and cores.

The study corrupts inside ``Dataset.__getitem__``: PIL image -> numpy array -> index gather
-> PIL image, once per image. We corrupt the uint8 dataset tensor in 4096-image chunks. The
baseline here is generous to the study (one precomputed flat index gather per image, the
fastest numpy form of its loop). Run: ``python benchmarks/corruptions.py [--dataset ...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0] and this file would shadow the
# `corruptions` package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import best_time, emit  # noqa: E402
from corruptions import parse  # noqa: E402
from trainables.data.batches import corrupt_split  # noqa: E402
from trainables.data.datasets import load_dataset  # noqa: E402


def study_path(images: list[Image.Image], spec: str) -> list[Image.Image]:
    """Per-image corruption as the study's ``corrupt.py`` does it (numpy on each PIL image)."""
    first = np.asarray(images[0])
    h, w, _ = first.shape
    if spec.startswith("gam_"):
        gamma = float(spec[4:])
        return [Image.fromarray((255 * (np.asarray(im) / 255) ** gamma).astype(np.uint8)) for im in images]
    # The pixel index map the study's permutation implies (taken from our code: same numbers).
    index = parse(spec)(torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)).flatten().long().numpy()
    return [Image.fromarray(np.asarray(im).reshape(h * w, -1)[index].reshape(h, w, -1)) for im in images]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="imagefolder:../shared/data/cifar10-jpeg")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--specs", nargs="+", default=["glo_8", "loc_4", "gam_0.2"])
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    split = type(data.test)(data.test.images[: args.n].clone(), data.test.labels[: args.n])
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in split.images]
    rows = {}
    for spec in args.specs:
        c = parse(spec)
        ours = best_time(lambda c=c: corrupt_split(split, c))
        theirs = best_time(lambda spec=spec: study_path(pil, spec), repeats=2)
        ref = np.stack([np.asarray(im) for im in study_path(pil[:64], spec)]).transpose(0, 3, 1, 2)
        assert np.array_equal(ref, c(split.images[:64]).numpy()), f"{spec}: paths disagree"
        rows[spec] = {
            "ours_img_per_s": len(split) / ours,
            "study_img_per_s": len(split) / theirs,
            "ratio": theirs / ours,
        }
        print(
            f"{spec:>8}: ours {len(split) / ours:12,.0f} img/s   study per-image {len(split) / theirs:10,.0f} img/s   x{theirs / ours:.1f}"
        )
    ratio = float(np.exp(np.mean([np.log(r["ratio"]) for r in rows.values()])))
    emit(
        {
            "benchmark": "corruptions",
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "n_images": len(split),
            "per_spec": rows,
            "ratio": ratio,
            "ratio_min": min(r["ratio"] for r in rows.values()),
        }
    )


if __name__ == "__main__":
    main()
