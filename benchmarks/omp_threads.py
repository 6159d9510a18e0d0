"""Why the training step slows down on a second thread: libgomp throttles its spin-wait.

Torch's CPU kernels run on OpenMP (libgomp). Every OS thread that enters a parallel region roots
its own team of worker threads, and libgomp counts all of them. When that count exceeds the CPUs
(2 cores: the main thread's team plus a second thread's team), every team's barrier spins only
~100 times before sleeping on a futex instead of ~300,000: a step made of many short kernels
(MoCo-v2: two encoders, a queue, an EMA over every parameter) then waits on wake-ups.

Three arms, each in a fresh interpreter, interleaved over rounds (the VM's speed drifts):

* ``main``: the step on the main thread;
* ``thread``: the step on a new thread while the main thread never entered a parallel region,
  as in a Ray Tune worker, whose function trainable runs on a runner thread;
* ``thread_after_main``: the same, after the main thread ran one parallel region (its team
  lives on, so two teams exist), as in a process that trained before it started the thread.

    python benchmarks/omp_threads.py --method moco_v2 --width 0.25 --batch 64 --rounds 3

The last line is JSON; ``ratio`` is the median per-round ``thread / main`` (about 1 when a Tune
trial's thread is not penalised) and ``after_main_ratio`` the same for ``thread_after_main``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402

from benchmarks.common import emit, on_new_thread, run_child, run_times  # noqa: E402

ARMS = ("main", "thread", "thread_after_main")
# channels_last in all; auto = what trials run in (bf16 only where the CPU has native bf16)
SETTINGS = {"auto": ("auto", True, False), "fp32": ("fp32", True, False), "bf16": ("bf16", True, False)}


def step_rate(spec: dict) -> float:
    """Samples/s of ``spec["steps"]`` consecutive steps after 3 warm-up steps (torch imported here)."""
    from benchmarks.train_step import make_step

    step = make_step(spec["method"], spec["width"], spec["batch"], "cpu", SETTINGS[spec["precision"]], spec["set"])
    return spec["steps"] * spec["batch"] / sum(run_times(step, repeats=spec["steps"], warmup=3))


def child(spec: dict) -> float:
    """One arm in this (fresh) interpreter; the main thread touches torch only in its arms."""
    if spec["arm"] == "main":
        return step_rate(spec)
    if spec["arm"] == "thread_after_main":
        import torch

        torch.ones(512, 512) @ torch.ones(512, 512)  # one parallel region: the main thread's team now exists
    return on_new_thread(lambda: step_rate(spec))


def arm_rate(spec: dict) -> float:
    """``child(spec)`` in a fresh interpreter: its samples/s."""
    return float(run_child(__file__, spec, f"arm {spec['arm']}")["rate"])


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Median samples/s per arm and the median per-round ratio of each thread arm to ``main``."""
    out = {arm: statistics.median(r[arm] for r in rounds) for arm in ARMS}
    for arm in ARMS[1:]:
        out[f"{arm}/main"] = statistics.median(r[arm] / r["main"] for r in rounds)
    return out


def main() -> None:
    if sys.argv[1:] == ["--child"]:  # one arm in a fresh interpreter; its spec on stdin
        print(json.dumps({"rate": child(json.loads(sys.stdin.read()))}))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="moco_v2", help="a registered method (default moco_v2)")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="auto", choices=list(SETTINGS),
                        help="auto (default): as trials run, bf16 only on native-bf16 CPUs")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="flat config override, e.g. method.queue_size=1024 (repeatable)")
    args = parser.parse_args()

    import yaml

    from trainables.methods import METHODS

    if args.method not in METHODS:  # before any arm starts, not as a child's traceback
        raise SystemExit(f"error: --method {args.method!r} is unknown; valid: {', '.join(sorted(METHODS))}")
    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    spec = {"method": args.method, "width": args.width, "batch": args.batch, "precision": args.precision,
            "steps": args.steps, "set": extra}
    print(f"{'round':>5}" + "".join(f" {a:>17}" for a in ARMS) + "".join(f" {a + '/main':>22}" for a in ARMS[1:]))
    rounds = []
    for i in range(args.rounds):
        r = {arm: arm_rate({**spec, "arm": arm}) for arm in ARMS}
        rounds.append(r)
        print(f"{i + 1:>5}" + "".join(f" {r[a]:17.1f}" for a in ARMS)
              + "".join(f" {r[a] / r['main']:22.2f}" for a in ARMS[1:]), flush=True)
    s = summarize(rounds)
    print(f"{'med':>5}" + "".join(f" {s[a]:17.1f}" for a in ARMS) + "".join(f" {s[a + '/main']:22.2f}" for a in ARMS[1:]))
    emit({"benchmark": "omp_threads", **spec, "rounds": rounds, **s,
          "ratio": s["thread/main"], "after_main_ratio": s["thread_after_main/main"]})


if __name__ == "__main__":
    main()
