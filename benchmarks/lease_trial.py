"""As much of one gpu-preset trial as fits a time budget, through the real trial loop (issue 24).

The trial is the one ``sweeps/paper_table1.py --budget gpu`` runs for ``--method``/``--corruption``/
``--seed`` (the same resolved flat config, 200-epoch schedule included), plus ``--set`` overrides
(the speed levers a lease chose). It calls ``trainables.loop.run_trial`` directly, without Ray or
MLflow (the device machine has neither), and stops after the last epoch whose end it expects within
``--budget-s`` of its own start (data loading counted). Every epoch's report is appended to
``<out>/trial_curves.csv`` and ``<out>/trial.json`` is rewritten after each, so a run killed at
the command's limit still leaves its curve:

    python3 benchmarks/lease_trial.py --dataset imagefolder:/tmp/data/cifar10-jpeg --budget-s 300 --out $OUT \
        --set system.compile=true --set system.optimizer_impl=fused

``--levers-from <train_step.py --study log>`` adds the levers of the moco_v2 mode that would train
the most samples within the budget (its samples/s times the budget left after its setup time, which
for a compiled mode is the compile); ``--set`` wins over them. (The preset itself evaluates on the device in
batches of 1024 and checks the loss every 50 steps.) ``--mode <name>`` takes a benchmarks.train_step STUDY_MODES mode's levers
without a log (the 2026-11-28 lease measured ``compiled+graph`` fastest: docs/results/gpu.md).

``--state <file>`` makes the trial resumable across commands (a lease's 10-minute limit): the trial
state is saved there every ``system.checkpoint_every`` epochs and, when the file exists, the trial
resumes from it (the same machine: keep it outside $OUT, e.g. under /tmp).

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


def main() -> None:
    started = time.perf_counter()
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
    args = parser.parse_args()
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
    curves = args.out / "trial_curves.csv"
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
        slowest = max(e["wall_s"] for e in summary["epochs"])  # an evaluation epoch is the slowest
        if not summary["done"] and now - started + 1.2 * slowest > args.budget_s:
            raise BudgetSpent

    resume = torch.load(args.state, weights_only=False) if args.state and args.state.exists() else None
    if resume is not None:
        print(f"resuming from {args.state} after epoch {resume['epoch']}", flush=True)

    def save(state: dict) -> None:
        tmp = args.state.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(args.state)  # atomic: a kill mid-save keeps the previous state

    try:
        run_trial(flat, report, dataset=data, resume=resume, save=save if args.state else None)
    except BudgetSpent:
        print(
            f"stopped after epoch {summary['epochs'][-1]['epoch']} of {flat['optim.epochs']}: budget {args.budget_s:g} s"
        )
    summary["wall_s"] = time.perf_counter() - started
    write(args.out / "trial.json", summary)


def write(path: Path, summary: dict) -> None:
    """The summary with per-epoch speeds, rewritten whole (a killed run keeps the last one)."""
    speeds = sorted(e["samples_per_s"] for e in summary["epochs"] if e["samples_per_s"])
    knn = [e for e in summary["epochs"] if e["knn_acc_study"] is not None]
    summary = {
        **summary,
        "epochs_done": len(summary["epochs"]),
        "median_samples_per_s": speeds[len(speeds) // 2] if speeds else None,
        "last_knn_acc_study": knn[-1]["knn_acc_study"] if knn else None,
        "last_knn_epoch": knn[-1]["epoch"] if knn else None,
    }
    path.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
