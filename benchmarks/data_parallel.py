"""The cost of the data-parallel machinery on one device: the same step, plain vs as a rank (issue 27).

A data-parallel trial (``--gpus-per-trial N``) steps ``DistributedDataParallel`` around the method,
with every BatchNorm synchronised (``trainables.distributed``): an all-gather per BN layer and an
all-reduce of the gradients per step. On one device with a one-rank process group (NCCL on CUDA,
gloo on a CPU) the gradient all-reduce runs but moves nothing between devices, and a one-rank
SyncBatchNorm computes plain BN (it gathers only over several ranks), so the ratio is the DDP
wrapper's and the all-reduce's overhead, a lower bound on a trial's before any scaling. Multi-GPU
scaling (and the BN all-gathers) are not measured here.

    python benchmarks/data_parallel.py [--method moco_v2] [--width 1.0] [--batch 256] [--steps 20]

Steps are the gpu preset's (``benchmarks.train_step.study_config``, eager mode: a data-parallel trial
never captures a CUDA graph), on fixed random 32 px batches already on the device; the two models are
built alike and timed in alternating rounds. The last line is JSON; ``ratio`` = rank samples/s over
plain samples/s (1.0 = no overhead).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from benchmarks.train_step import study_config, study_step, time_steps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="moco_v2", help="a method with data_parallel set (every registered one)")
    parser.add_argument("--width", type=float, default=None, help="default: 1.0 on CUDA, 0.25 on a CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 64 on a CPU")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed chunks per round (5 steps each on CUDA, 1 on a CPU)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    width = args.width or (1.0 if cuda else 0.25)
    batch = args.batch or (256 if cuda else 64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    try:
        cfg = study_config(args.method, "eager", device, width, batch)
        steps = {"plain": study_step(cfg, device), "rank": study_step(cfg, device, as_rank=True)}
        best, rounds = dict.fromkeys(steps, 0.0), 0
        try:
            for _ in range(args.rounds):  # alternate, so drift of the machine hits both alike
                for name, step in steps.items():
                    times = time_steps(step, device, warmup=3, repeats=args.steps, chunk=1 if not cuda else 5)
                    best[name] = max(best[name], batch / min(times))
                rounds += 1
        except KeyboardInterrupt:  # a lease's `timeout -s INT`: the rounds so far still make the JSON line
            print(f"interrupted after {rounds} of {args.rounds} rounds", flush=True)
    finally:
        dist.destroy_process_group()
    if not rounds:
        raise SystemExit("no round finished: no ratio")
    print(f"device {torch.cuda.get_device_name(0) if cuda else 'cpu'}; {args.method}, width {width}, batch {batch}")
    for name, rate in best.items():
        print(f"{name:6s} {rate:10.1f} samples/s (best step of {rounds} rounds x {args.steps})")
    ratio = best["rank"] / best["plain"]
    print(f"ratio rank / plain {ratio:.3f}")
    emit(
        {
            "benchmark": "data_parallel",
            "device": "cuda" if cuda else "cpu",
            "method": args.method,
            "width": width,
            "batch": batch,
            "rounds": rounds,
            **{f"{k}_samples_per_s": v for k, v in best.items()},
            "ratio": ratio,
        }
    )


if __name__ == "__main__":
    main()
