"""A data-parallel rank's input: its shard alone vs the whole global batch, then its shard (issue 27).

Every rank of a data-parallel trial needs the single process's views of its rows of each global
batch. ``train_batches(..., rows)`` loads (decodes, for a streamed split), corrupts and augments
only those rows, drawing every random number for the whole batch; the baseline is what ranks did
before: the whole global batch through the same pipeline, then the rank's rows kept. The two are
checked equal, then timed for rank 0 of ``--ranks`` in alternating rounds.

    python benchmarks/rank_input.py [--ranks 4] [--rank-batch 16] [--images 192] [--size 256 --crop 224]

Two cases on ImageNet-sized JPEGs (500x375, written to a temporary folder from
``../shared/data/cifar10-jpeg``), both the study's ImageNet-100 recipe (stored at ``--size``, the
fixed ``glo_4`` corruption, two ``moco_v2`` random-resized crops to ``--crop``): the split decoded in
memory (augmentation dominates) and streamed (each batch decoded by ``--workers`` processes). The
JSON last line's ``ratio`` is the lower of the two (shard / baseline global batches per second);
with R ranks, R is what the work alone predicts (a smaller working set can give more).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import torch  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from benchmarks.streaming import SHARED, upscaled_folder  # noqa: E402
from corruptions import parse  # noqa: E402
from trainables.data.augment import build_augmentation  # noqa: E402
from trainables.data.batches import Pipeline, plan_corruption, train_batches  # noqa: E402
from trainables.data.datasets import load_dataset  # noqa: E402
from trainables.distributed import Ranks, batch_rows  # noqa: E402
from trainables.seeding import generators  # noqa: E402


def epoch(split, pipe: Pipeline, batch: int, rows: slice | None, keep: slice) -> tuple[float, list[torch.Tensor]]:
    """(seconds, first batch's views) of one epoch of a rank's views: with ``rows``, the shard
    alone; without, the whole global batch and then rows ``keep``."""
    start, first = time.perf_counter(), None
    for views, _ in train_batches(split, pipe, batch, generators(0), "cpu", rows):
        views = views if rows is not None else [v[keep] for v in views]
        first = views if first is None else first
    return time.perf_counter() - start, first


def compare(name: str, split, pipe: Pipeline, ranks: int, rank_batch: int, repeats: int) -> dict:
    """Best global batches per second of rank 0's input, its shard vs the whole batch, in alternating rounds."""
    batch = ranks * rank_batch
    rows = batch_rows(batch, Ranks(0, ranks))
    steps = len(split) // batch
    best = {"shard": 0.0, "whole": 0.0}
    for _ in range(repeats):  # alternate: a busy neighbour on a shared machine slows both alike
        seconds, mine = epoch(split, pipe, batch, rows, rows)
        best["shard"] = max(best["shard"], steps / seconds)
        seconds, theirs = epoch(split, pipe, batch, None, rows)
        best["whole"] = max(best["whole"], steps / seconds)
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"{name}: a shard's views differ")
    return {
        "case": name,
        "batches": steps,
        "shard_batches_per_s": round(best["shard"], 3),
        "whole_batches_per_s": round(best["whole"], 3),
        "ratio": round(best["shard"] / best["whole"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=SHARED, help="an ImageFolder with train/ (default: %(default)s)")
    p.add_argument("--images", type=int, default=192, help="ImageNet-sized JPEGs made (an epoch)")
    p.add_argument("--size", type=int, default=256, help="stored side (the study's ImageNet 256)")
    p.add_argument("--crop", type=int, default=224, help="random-resized crop side (the study's 224)")
    p.add_argument("--ranks", type=int, default=4, help="ranks sharing each global batch (the study's 4 GPUs)")
    p.add_argument("--rank-batch", type=int, default=16, help="images per rank per step")
    p.add_argument("--workers", type=int, default=2, help="decoding processes of the streamed case")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    augment = build_augmentation("moco_v2", size=args.crop)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = upscaled_folder(args.root, Path(tmp), args.images)
        for name, streaming in (("in memory", False), ("streamed", True)):
            data = load_dataset(
                f"imagefolder:{folder}", image_size=args.size, streaming=streaming, stream_workers=args.workers
            )
            split, per_batch = plan_corruption(data.train, parse("glo_4"))
            pipe = Pipeline(per_batch, augment, 2, (0.485, 0.456, 0.406), (0.228, 0.224, 0.225))
            rows.append(compare(name, split, pipe, args.ranks, args.rank_batch, args.repeats))
    print(f"{'case':<12}{'batches':>8}{'shard batch/s':>15}{'whole batch/s':>15}{'ratio':>8}")
    for r in rows:
        print(
            f"{r['case']:<12}{r['batches']:>8}{r['shard_batches_per_s']:>15.2f}"
            f"{r['whole_batches_per_s']:>15.2f}{r['ratio']:>8.2f}"
        )
    print(
        f"rank 0 of {args.ranks}, {args.rank_batch} images per rank, {args.size} px stored, {args.crop} px crops, "
        f"{torch.get_num_threads()} threads; best of {args.repeats} alternating rounds"
    )
    emit(
        {
            "benchmark": "rank_input",
            "ranks": args.ranks,
            "rank_batch": args.rank_batch,
            "cases": rows,
            "ratio": min(r["ratio"] for r in rows),
        }
    )


if __name__ == "__main__":
    main()
