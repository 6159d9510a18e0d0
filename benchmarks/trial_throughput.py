"""Trial throughput in a finished sweep vs ``train_step.py`` for the same model alone.

For every trained trial of a Tune experiment folder: the median of its per-epoch ``samples_per_s``
(what the trial loop measured, augmentation included), next to the training step of the same
method, width, batch, method parameters and numeric setting timed alone right now, in this process
(``benchmarks.train_step.make_step``: random batches already on the device). Run it on an idle
machine after the sweep:

    python benchmarks/trial_throughput.py --experiment paper_table1-cifar10-cpu3 --storage-path /work/runs

``ratio`` columns are trial median / benchmark median step and trial median / benchmark best step;
``ok`` marks a trial within ``--tolerance`` (default 10%) of the benchmark's median step. The last
line is JSON; its ``ratio`` is the lowest trial / benchmark-median ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402

from analysis.collect import load_tune, trial_results  # noqa: E402
from benchmarks.common import emit  # noqa: E402
from benchmarks.train_step import CPU_SETTINGS, make_step, step_times  # noqa: E402
from trainables.build import resolve_precision  # noqa: E402
from trainables.schema import DEFAULT_STORAGE  # noqa: E402
from trainables.tune_adapter import trial_config  # noqa: E402

SPEED_KEYS = ("method.", "model.")  # with batch and precision: what sets the cost of one step


def step_key(trial: dict) -> tuple:
    """What makes two trials' training steps cost the same: method, batch, setting, model/method keys."""
    # train_step times no bf16 without channels_last: such a trial has no benchmark row (KeyError).
    # The step is timed on this machine's CPU, as the trial ran: ``auto`` resolves as it did there.
    bf16 = resolve_precision(trial["system.precision"], torch.device("cpu")) == "bf16"
    setting = {(False, False): "fp32", (True, False): "channels_last", (True, True): "channels_last+bf16"}[
        (bool(trial["system.channels_last"]), bf16)
    ]
    extra = tuple(sorted((k, v) for k, v in trial.items() if k.startswith(SPEED_KEYS) and _scalar(v)))
    return trial["method"], int(trial["optim.batch_size"]), setting, extra


def epoch_speeds(trial_dir: str) -> list[float]:
    """Per-epoch samples/s from a trial folder's ``result.json`` (one JSON object per epoch)."""
    return [r["samples_per_s"] for r in trial_results(Path(trial_dir)) if "samples_per_s" in r]


def flat_config(trial_dir: str) -> dict:
    """The trial's flat config as Tune recorded it (types kept, unlike a DataFrame row)."""
    return trial_config(trial_results(Path(trial_dir))[-1]["config"])


def step_for(key: tuple) -> Callable[[], None]:
    """One CPU training step of the model a ``step_key`` names, built as ``train_step.py`` builds it."""
    method, batch, setting, extra = key
    extra = dict(extra)
    return make_step(method, float(extra.get("model.width", 1.0)), batch, "cpu", CPU_SETTINGS[setting], extra)


def bench(key: tuple, steps: int) -> dict:
    """Best and median samples/s of ``steps`` timed training steps of that model alone (CPU)."""
    times = step_times(step_for(key), warmup=3, steps=steps)
    batch = key[1]
    return {"best": batch / min(times), "median": batch / statistics.median(times)}


def _scalar(value) -> bool:
    return isinstance(value, (bool, int, float, str)) or value is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="Tune experiment name (a folder under --storage-path)")
    parser.add_argument("--storage-path", type=Path, default=DEFAULT_STORAGE)
    parser.add_argument("--steps", type=int, default=20, help="timed benchmark steps per distinct model")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()

    folders = load_tune(args.storage_path.resolve() / args.experiment)["trial_dir"]
    trials = [{**flat_config(d), "trial_dir": d} for d in folders]
    trials = [t for t in trials if t["optim.epochs"] > 0]
    if not trials:
        raise SystemExit(f"error: no finished trained trials in {args.storage_path / args.experiment}")
    load_before = os.getloadavg()[0]
    benches = {key: bench(key, args.steps) for key in dict.fromkeys(step_key(t) for t in trials)}
    rows = []
    print(
        f"{'method':12} {'corruption':10} {'seed':>4} {'trial':>7} {'bench med':>9} {'bench best':>10} "
        f"{'/med':>5} {'/best':>5}  ok"
    )
    for t in sorted(trials, key=lambda t: (t["method"], t["data.corruption"], t["system.seed"])):
        b = benches[step_key(t)]
        median = statistics.median(epoch_speeds(t["trial_dir"]))
        row = {
            "method": t["method"],
            "corruption": t["data.corruption"],
            "seed": int(t["system.seed"]),
            "trial_median": median,
            "bench_median": b["median"],
            "bench_best": b["best"],
            "ratio_median": median / b["median"],
            "ratio_best": median / b["best"],
        }
        row["ok"] = row["ratio_median"] >= 1 - args.tolerance
        rows.append(row)
        print(
            f"{row['method']:12} {row['corruption']:10} {row['seed']:>4} {median:7.1f} {b['median']:9.1f} "
            f"{b['best']:10.1f} {row['ratio_median']:5.2f} {row['ratio_best']:5.2f}  {'yes' if row['ok'] else 'NO'}"
        )
    ok = sum(r["ok"] for r in rows)
    print(f"{ok} of {len(rows)} trials within {args.tolerance:.0%} of the benchmark's median step")
    emit(
        {
            "benchmark": "trial_throughput",
            "experiment": args.experiment,
            "rows": rows,
            "within": ok,
            "loadavg_before_after": [load_before, os.getloadavg()[0]],
            "ratio": min(r["ratio_median"] for r in rows),
        }
    )


if __name__ == "__main__":
    main()
