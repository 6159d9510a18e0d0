"""What a sweep adds around the training step, measured in interleaved rounds that cancel VM drift.

For every distinct training step of a finished sweep (one trial stands for all trials that share
method, batch, width, method parameters and numeric setting), each round runs three arms back to
back, each timing one epoch's worth of steps at the trial's settings:

* ``step``: ``benchmarks.train_step.make_step`` alone (random batches already on the device);
* ``loop``: ``run_trial`` called directly on the trial's real data (batch assembly, augmentation,
  channels_last copies, the loss check), no Ray;
* ``thread``: the same call in a ``threading.Thread`` of a fresh interpreter whose main thread never
  runs torch, as Tune runs a function trainable (its runner thread in a fresh worker), no Ray. In
  this process the main thread has already trained, and a second thread would pay libgomp's
  throttled spin-wait, which a Tune worker does not (``benchmarks/omp_threads.py``);
* ``tune``: the same trial through Ray Tune (``tune_adapter.trainable``, every core), with a
  local Ray instance started for this arm only.

``loop``, ``thread`` and ``tune`` run two epochs and time the second, as a sweep's per-epoch median does: the
first epoch of a Tune trial shares the cores with the trial's start-up in the driver.

Every arm's samples/s is a whole epoch's rate (steps x batch / wall seconds), so the arms compare
like for like; on a VM whose speed drifts by tens of percent between minutes, only arms timed
minutes apart compare at all, which ``trial_throughput.py`` (a finished sweep against a step timed
afterwards) cannot promise. Run it on an idle machine:

    python benchmarks/loop_overhead.py --experiment paper_table1-cifar10-cpu4 --storage-path /work/runs

The last line is JSON; its ``ratio`` is the lowest median tune/step ratio over the steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from analysis.collect import load_tune  # noqa: E402
from benchmarks.common import emit, on_new_thread, run_child  # noqa: E402
from benchmarks.trial_throughput import flat_config, step_for, step_key  # noqa: E402
from trainables.build import load_data  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.loop import run_trial  # noqa: E402

ARMS = ("step", "loop", "thread", "tune")
TIMED = {"optim.epochs": 2, "eval.eval_every": 0, "eval.probe": False, "eval.knn_at_init": False,
         "data.test_per_class": 10, "system.checkpoint_every": 1}  # evaluation is not timed: keep it small


def timed_config(flat: dict) -> dict:
    """A trial's flat config cut to two epochs (the second is timed), evaluation kept small."""
    return {**flat, **TIMED}


def step_rate(flat: dict, steps: int) -> float:
    """Samples/s of ``steps`` consecutive training steps of that model alone, warm-up excluded."""
    key = step_key(flat)
    step, batch = step_for(key), key[1]
    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def loop_rate(flat: dict, data) -> float:
    """Samples/s of the trial loop's last epoch (``run_trial``'s own ``samples_per_s``)."""
    reports: list[dict] = []
    run_trial(flat, report=reports.append, dataset=data)
    return reports[-1]["samples_per_s"]


def thread_rate(flat: dict) -> float:
    """``loop_rate`` on a worker thread of a fresh interpreter (data loaded there, in the thread)."""
    return float(run_child(__file__, flat, "the thread arm")["rate"])


def thread_child(flat: dict) -> float:
    """The thread arm's interpreter: everything torch runs on one new thread, as in a Tune worker."""
    return on_new_thread(lambda: loop_rate(flat, load_data(TrialConfig.from_flat(flat).data)))


def tune_rate(flat: dict, data, cpus: int) -> float:
    """Samples/s of the same last epoch in a Ray Tune trial holding every core."""
    import ray
    from ray import tune

    from trainables import tune_adapter

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            tuner = tune.Tuner(tune_adapter.trainable(data, {"cpu": cpus, "gpu": 0}),
                               param_space={"sweep.cell": flat},
                               run_config=tune.RunConfig(name="loop_overhead", storage_path=storage, verbose=0))
            result = tuner.fit()[0]
            if result.error:
                raise RuntimeError(f"the Tune arm failed: {result.error}")
            return result.metrics["samples_per_s"]
    finally:
        ray.shutdown()


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Median samples/s per arm and median per-round ratios ``<arm>/step`` for the other arms."""
    out = {arm: statistics.median(r[arm] for r in rounds) for arm in ARMS if all(arm in r for r in rounds)}
    for arm in ARMS[1:]:
        if arm in out:
            out[f"{arm}/step"] = statistics.median(r[arm] / r["step"] for r in rounds)
    return out


def line(method: str, label: str, rates: dict[str, float], ratios: dict[str, float]) -> str:
    """One printed row: samples/s per arm, then each arm's ratio to the step (nan where not run)."""
    nan = float("nan")
    return (f"{method:12} {label:>5}" + "".join(f" {rates.get(a, nan):7.1f}" for a in ARMS)
            + "".join(f" {ratios.get(a + '/step', nan):11.2f}" for a in ARMS[1:]))


def main() -> None:
    if sys.argv[1:] == ["--child"]:  # the thread arm's fresh interpreter; flat config on stdin
        print(json.dumps({"rate": thread_child(json.loads(sys.stdin.read()))}))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="Tune experiment name (a folder under --storage-path)")
    parser.add_argument("--storage-path", type=Path, default=Path("runs"))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every arm per distinct step")
    parser.add_argument("--no-tune", action="store_true", help="skip the Ray Tune arm (step, loop and thread only)")
    parser.add_argument("--methods", nargs="+", default=None, help="time only these methods' steps (default: all in the sweep)")
    args = parser.parse_args()

    folders = load_tune(args.storage_path.resolve() / args.experiment)["trial_dir"]
    trials = [flat_config(d) for d in folders]
    stand_ins: dict[tuple, dict] = {}
    for t in (t for t in trials if t["optim.epochs"] > 0 and (args.methods is None or t["method"] in args.methods)):
        stand_ins.setdefault(step_key(t), t)
    if not stand_ins:
        present = sorted({t["method"] for t in trials if t["optim.epochs"] > 0})
        if args.methods and present:
            raise SystemExit(f"error: --methods {' '.join(args.methods)}: no trained trials of these in {args.experiment}; "
                             f"valid: {', '.join(present)}")
        raise SystemExit(f"error: no trained trials in {args.storage_path / args.experiment}")
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    rows = []
    print(f"{'method':12} {'round':>5}" + "".join(f" {a:>7}" for a in ARMS) + "".join(f" {a + '/step':>11}" for a in ARMS[1:]))
    for key, trial in stand_ins.items():
        flat = timed_config(trial)
        data = load_data(TrialConfig.from_flat(flat).data)
        steps = len(data.train) // int(flat["optim.batch_size"])
        rounds = []
        for i in range(args.rounds):
            r = {"step": step_rate(flat, steps), "loop": loop_rate(flat, data), "thread": thread_rate(flat)}
            if not args.no_tune:
                r["tune"] = tune_rate(flat, data, cpus)
            rounds.append(r)
            print(line(key[0], str(i + 1), r, {f"{a}/step": r[a] / r["step"] for a in ARMS[1:] if a in r}), flush=True)
        s = summarize(rounds)
        print(line(key[0], "med", s, s))
        rows.append({"method": key[0], "batch": key[1], "setting": key[2], "steps": steps, "rounds": rounds, **s})
    worst = min(r.get("tune/step", r["loop/step"]) for r in rows)
    emit({"benchmark": "loop_overhead", "experiment": args.experiment, "rows": rows, "cpus": cpus,
          "loadavg_before_after": [load_before, os.getloadavg()[0]], "ratio": worst})


if __name__ == "__main__":
    main()
