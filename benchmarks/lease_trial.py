"""As much of one gpu-preset trial as fits a time budget, through the real trial loop (issue 24).

The trial is the one ``sweeps/paper_table1.py --budget gpu`` runs for ``--method``/``--corruption``/
``--seed`` (the same resolved flat config, 200-epoch schedule included), plus ``--set`` overrides
(the speed levers a lease chose). It calls ``trainables.loop.run_trial`` directly, without Ray or
MLflow (the device machine has neither), and stops after the last epoch whose successors it expects
to end within ``--budget-s`` of its own start (data loading counted; ``budget_stops``). Every epoch's
report is appended to ``<out>/trial_curves.csv`` and ``<out>/trial.json`` is rewritten after each,
so a run killed at the command's limit still leaves its curve:

    python3 benchmarks/lease_trial.py --dataset imagefolder:/tmp/data/cifar10-jpeg --budget-s 300 --out $OUT \
        --set system.compile=true --set system.optimizer_impl=fused

``--levers-from <train_step.py --study log>`` adds the levers of the moco_v2 mode that would train
the most samples within the budget (its samples/s times the budget left after its setup time, which
for a compiled mode is the compile); ``--set`` wins over them. (The preset itself evaluates on the device in
batches of 1024 and checks the loss every 50 steps.) ``--mode <name>`` takes a benchmarks.train_step STUDY_MODES mode's levers
without a log (the 2026-11-28 lease measured ``compiled+graph`` fastest: docs/results/gpu.md).

``--state <file>`` makes the trial resumable across commands (a lease's 10-minute limit): the trial
state is saved there every ``system.checkpoint_every`` epochs and, when the file exists, the trial
resumes from it (the same machine: keep it outside $OUT, e.g. under /tmp). With a state file the
budget stop falls just after a saved epoch where it can, so the next command trains no epoch twice.
A launch stopped before the trial's last epoch exits with status 75 (``RESUMABLE``).

``--rows <file>`` appends the launch's one-line result (JSON) and prints ``seed_noise`` over the
file's finished trials of the same cell and schedule: each mode's final kNN against ``eager`` at the
same seed, next to the spread between seeds within each mode (``gpu_lease.sh --compare``).

``samples_per_s`` per epoch is the trial's own (training time only, augmentation on the device
included); ``knn_acc_study`` at evaluation epochs is the study's kNN protocol, against its
82.44 +- 0.18 for moco_v2 on ori after 200 epochs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.train_step import FAST_IMPL, STUDY_MODES, mode_settings  # noqa: E402
from sweeps.launch import prepare  # noqa: E402
from sweeps.paper_table1 import SWEEP  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.loop import run_trial  # noqa: E402

STUDY_KNN = {("moco_v2", "ori"): 82.44, ("moco_v2", "glo_8"): 59.24}  # Table 1, kNN, 3 seeds (docs/results/gpu.md)
COLUMNS = ("epoch", "loss", "lr", "samples_per_s", "epoch_time_s", "wall_s", "knn_acc", "knn_acc_study", "uniformity")
RESUMABLE = 75  # exit status of a launch stopped before the last epoch (EX_TEMPFAIL: run it again to resume)
SAFETY = 1.2  # the epochs ahead must fit the budget at this multiple of their expected time
# An evaluation this launch has not yet timed counts as this many epochs: the first one of a launch
# compiles the evaluation (2026-11-28 lease: epoch 10 took 9.3 s, 2.4 epochs of 2.74 s; later ones 0.3 s more).
UNSEEN_EVAL_EPOCHS = 3.0


class BudgetSpent(Exception):
    """Raised from the report callback to end the trial between epochs."""


def preset_trial(dataset: str, method: str, corruption: str, seed: int, overrides: dict) -> tuple[dict, object]:
    """The gpu preset's flat config for one cell (as the sweep resolves it) with ``overrides``, and the dataset."""
    with tempfile.TemporaryDirectory() as storage:
        plan, _ = prepare(SWEEP, ["--budget", "gpu", "--dry-run", "--dataset", dataset, "--storage-path", storage])
    cells = [
        c
        for c in plan.cells
        if (c["method"], c["data.corruption"], c["system.seed"]) == (method, corruption, seed)
        and c["optim.epochs"] > 0
        and c.get("data.labels_per_class") is None
    ]
    if not cells:
        raise SystemExit(f"no gpu-preset trial {method} {corruption} seed {seed}")
    return TrialConfig.from_flat({**cells[0], **overrides}).resolved().to_flat(), plan.data


def levers_from(log: Path, budget_s: float, optimizer: str) -> tuple[dict, str | None]:
    """The flat overrides of the benchmark's best moco_v2 mode for a ``budget_s`` trial, and its name."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")] if log.exists() else []
    rows = (
        [r for r in json.loads(lines[-1])["rows"] if r["method"] == "moco_v2" and "samples_per_s" in r] if lines else []
    )
    if not rows:
        return {}, None
    best = max(rows, key=lambda r: r["samples_per_s"] * max(0.0, budget_s - r["setup_s"]))
    return mode_levers(best["mode"], optimizer), best["mode"]


def mode_levers(mode: str, optimizer: str) -> dict:
    """The flat overrides of one STUDY_MODES mode in a trial (the gpu preset already evaluates on the
    device in batches of 1024 and checks the loss every 50 steps)."""
    if mode not in STUDY_MODES:
        raise SystemExit(f"--mode {mode!r} is invalid; valid: {', '.join(STUDY_MODES)}")
    levers = mode_settings(mode)  # every lever set: the preset's own (compile + graph) do not leak in
    if mode != "eager":
        levers["system.optimizer_impl"] = FAST_IMPL[optimizer]
    return levers


def expected_s(epochs: list[dict], n: int, evals: int) -> float:
    """Seconds that ``n`` more epochs take, ``evals`` of them evaluating, judged from this launch's
    ``epochs`` (report rows: ``wall_s``, ``epoch_time_s``, ``knn_acc`` where evaluated).

    The launch's first epoch is left out once another exists: its wall time also holds loading the
    data, the compile and the graph capture (17.4 s against 2.74 s in the 2026-11-28 lease), and
    counting it as an epoch stopped that lease 20 s short of its budget. Alone, its training time
    (``epoch_time_s``, without the loading) stands in for an epoch.
    """
    if len(epochs) == 1:
        only = epochs[0]
        return (n + evals * UNSEEN_EVAL_EPOCHS) * (only.get("epoch_time_s") or only["wall_s"])
    steady = epochs[1:]
    plain = [e["wall_s"] for e in steady if e.get("knn_acc") is None] or [e["wall_s"] for e in steady]
    epoch_s = max(plain)
    extra = [e["wall_s"] - epoch_s for e in steady if e.get("knn_acc") is not None]
    eval_s = max(0.0, extra[-1]) if extra else UNSEEN_EVAL_EPOCHS * epoch_s  # the latest: the first compiles
    return n * epoch_s + evals * eval_s


def budget_stops(epochs: list[dict], flat: dict, elapsed_s: float, budget_s: float, saved: bool) -> bool:
    """Whether to stop after the last of ``epochs``: the epochs ahead would end past ``budget_s``.

    The epochs ahead are the next one, or with a state file (``saved``) after an epoch that saved
    the state, every epoch up to the next saved one: stopping between two saves would leave epochs
    that the next command trains again (the loop saves every ``system.checkpoint_every`` epochs and
    after the last; it evaluates every ``eval.eval_every`` and at the end).
    """
    done, total = epochs[-1]["epoch"], flat["optim.epochs"]
    every = max(1, flat["system.checkpoint_every"])
    ahead = min(done + every, total) - done if saved and done % every == 0 else 1
    eval_every = flat["eval.eval_every"]
    evals = sum(1 for e in range(done + 1, done + ahead + 1) if e == total or (eval_every and e % eval_every == 0))
    return elapsed_s + SAFETY * expected_s(epochs, ahead, evals) > budget_s


def seed_noise(rows: list[dict], metric: str = "knn_acc_study", baseline: str = "eager") -> dict:
    """Final ``metric`` of the finished ``rows`` (``--rows`` lines of one cell and schedule) by mode and seed.

    ``diff``: each other mode's |value - baseline's| at the same seed; ``spread``: max - min over the
    seeds within each mode (two seeds or more). ``within_seed_noise``: the largest difference is no
    larger than the largest spread (None until both exist): a mode that changes the numerics beyond
    what another seed does fails it.
    """
    values: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["done"] and r.get(metric) is not None:
            values.setdefault(r["mode"], {})[r["seed"]] = r[metric]
    spread = {m: max(v.values()) - min(v.values()) for m, v in values.items() if len(v) > 1}
    base = values.get(baseline, {})
    diff = {m: {s: abs(x - base[s]) for s, x in v.items() if s in base} for m, v in values.items() if m != baseline}
    largest_diff = max((d for per in diff.values() for d in per.values()), default=None)
    largest_spread = max(spread.values(), default=None)
    within = None if largest_diff is None or largest_spread is None else largest_diff <= largest_spread
    return {
        "metric": metric,
        "baseline": baseline,
        "values": values,
        "spread": spread,
        "diff": diff,
        "largest_diff": largest_diff,
        "largest_spread": largest_spread,
        "within_seed_noise": within,
    }


def describe(noise: dict) -> str:
    """``seed_noise``'s result in two lines for the lease log."""
    values = "; ".join(
        f"{m} "
        + " ".join(f"s{s} {x:.2f}" for s, x in sorted(v.items()))
        + (f" (spread {noise['spread'][m]:.2f})" if m in noise["spread"] else "")
        for m, v in noise["values"].items()
    )
    diffs = "; ".join(
        f"|{noise['baseline']} - {m}| " + " ".join(f"s{s} {d:.2f}" for s, d in sorted(per.items()))
        for m, per in noise["diff"].items()
    )
    verdict = {None: "not decided yet", True: "within seed noise", False: "NOT within seed noise"}
    return f"seed noise, final {noise['metric']}: {values}\n{diffs or 'no pair yet'}: {verdict[noise['within_seed_noise']]}"


def result_row(args: argparse.Namespace, summary: dict) -> dict:
    """The launch's one-line result for ``--rows``: its cell, mode and seed, whether the trial
    finished, final kNN, speed, and its curve as [epoch, loss, knn_acc_study] triples."""
    final, epochs = summary.get("final", {}), summary["epochs"]
    return {
        "method": args.method,
        "corruption": args.corruption,
        "seed": args.seed,
        "mode": summary["mode"],
        "epochs": summary["trial"]["optim.epochs"],
        "last_epoch": epochs[-1]["epoch"] if epochs else None,
        "done": summary["done"],
        "knn_acc": final.get("knn_acc"),
        "knn_acc_study": final.get("knn_acc_study"),
        "median_samples_per_s": median_speed(epochs),
        "wall_s": summary["wall_s"],
        "curve": [[e["epoch"], e["loss"], e["knn_acc_study"]] for e in epochs],
    }


def append_row(path: Path, row: dict) -> list[dict]:
    """Append ``row`` to the JSON-lines file; returns the file's rows of the same cell and schedule."""
    with path.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    same = ("method", "corruption", "epochs")
    return [r for r in rows if all(r[k] == row[k] for k in same)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="imagefolder:<path>, or digits for a CPU dry run")
    parser.add_argument("--method", default="moco_v2")
    parser.add_argument("--corruption", default="ori")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="flat override (repeatable)")
    parser.add_argument("--levers-from", type=Path, help="a train_step.py --study log: use its best moco_v2 mode")
    parser.add_argument("--mode", help="use this STUDY_MODES mode's levers (instead of --levers-from)")
    parser.add_argument("--state", type=Path, help="resumable trial state: saved here, resumed from here if present")
    parser.add_argument(
        "--max-epochs", type=int, help="stop after this many epochs of this launch, as a spent budget does (dry runs)"
    )
    parser.add_argument("--rows", type=Path, help="append the result here (JSON lines) and print the seed noise")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the trial; returns 0 once its last epoch is done, ``RESUMABLE`` when stopped before."""
    started = time.perf_counter()
    args = parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    mode = None
    if args.levers_from:
        levers, mode = levers_from(args.levers_from, args.budget_s, "sgd")  # the gpu preset's moco_v2 runs SGD
        overrides = {**levers, **overrides}
    elif args.mode:
        levers, mode = mode_levers(args.mode, "sgd"), args.mode
        overrides = {**levers, **overrides}
    flat, data = preset_trial(args.dataset, args.method, args.corruption, args.seed, overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"trial {args.method} {args.corruption} seed {args.seed}; mode {mode or '-'}; overrides {overrides}", flush=True
    )
    summary = {
        "trial": flat,
        "overrides": overrides,
        "mode": mode,
        "budget_s": args.budget_s,
        "setup_s": time.perf_counter() - started,
        "study_knn": STUDY_KNN.get((args.method, args.corruption)),
        "epochs": [],
        "done": False,
    }
    train(args, flat, data, summary, started)
    summary["wall_s"] = time.perf_counter() - started
    write(args.out / "trial.json", summary)
    if args.rows:
        noise = seed_noise(append_row(args.rows, result_row(args, summary)))
        if noise["values"]:
            print(describe(noise), flush=True)
    return 0 if summary["done"] else RESUMABLE


def train(args: argparse.Namespace, flat: dict, data: object, summary: dict, started: float) -> None:
    """``run_trial`` with a report that records each epoch and stops at the budget (or ``--max-epochs``)."""
    curves = args.out / "trial_curves.csv"
    with curves.open("w", newline="") as f:
        csv.writer(f).writerow(COLUMNS)
    last = [time.perf_counter()]

    def report(metrics: dict) -> None:
        now = time.perf_counter()
        row = {**{k: metrics.get(k) for k in COLUMNS}, "wall_s": now - last[0]}
        last[0] = now
        with curves.open("a", newline="") as f:
            csv.writer(f).writerow([row[k] for k in COLUMNS])
        summary["epochs"].append(row)
        summary["done"] = bool(metrics.get("done"))
        if summary["done"]:
            summary["final"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        write(args.out / "trial.json", summary)
        print(" ".join(f"{k} {row[k]:.4g}" for k in COLUMNS if isinstance(row[k], (int, float))), flush=True)
        if summary["done"]:
            return
        if args.max_epochs and len(summary["epochs"]) >= args.max_epochs:
            raise BudgetSpent(f"--max-epochs {args.max_epochs}")
        if budget_stops(summary["epochs"], flat, now - started, args.budget_s, saved=args.state is not None):
            raise BudgetSpent(f"budget {args.budget_s:g} s")

    resume = torch.load(args.state, weights_only=False) if args.state and args.state.exists() else None
    if resume is not None:
        print(f"resuming from {args.state} after epoch {resume['epoch']}", flush=True)

    def save(state: dict) -> None:
        tmp = args.state.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(args.state)  # atomic: a kill mid-save keeps the previous state

    try:
        run_trial(flat, report, dataset=data, resume=resume, save=save if args.state else None)
    except (BudgetSpent, KeyboardInterrupt) as stop:  # KeyboardInterrupt: the command's `timeout -s INT`
        last_epoch = summary["epochs"][-1]["epoch"] if summary["epochs"] else "none"
        print(f"stopped after epoch {last_epoch} of {flat['optim.epochs']}: {stop or 'interrupted'}", flush=True)


def median_speed(epochs: list[dict]) -> float | None:
    """The median ``samples_per_s`` of report rows (None before the first)."""
    speeds = sorted(e["samples_per_s"] for e in epochs if e["samples_per_s"])
    return speeds[len(speeds) // 2] if speeds else None


def write(path: Path, summary: dict) -> None:
    """The summary with per-epoch speeds, rewritten whole (a killed run keeps the last one)."""
    knn = [e for e in summary["epochs"] if e["knn_acc_study"] is not None]
    summary = {
        **summary,
        "epochs_done": len(summary["epochs"]),
        "median_samples_per_s": median_speed(summary["epochs"]),
        "last_knn_acc_study": knn[-1]["knn_acc_study"] if knn else None,
        "last_knn_epoch": knn[-1]["epoch"] if knn else None,
    }
    path.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
