"""Per-epoch curves of every trial of a sweep, finished or not: kNN accuracy and throughput.

    python -m analysis.curves --experiment NAME --storage-path DIR [--out DIR] [--target moco_v2:ori=82.44]

Reads the Tune experiment folder (``result.json``: one line per epoch report, resumed runs
appended), so it works on a sweep that is still running or was interrupted. Writes to ``--out``
(default ``<storage>/analysis/<experiment>``):

* ``curves.csv``: one row per trial x epoch; where a resume re-ran an epoch, its last report wins;
  a replayed report (an epoch trained before a resume, reported again) only fills an epoch that
  has no report of its own, and has no timestamp;
* ``curves.png``: kNN accuracy per epoch (one line per trial; ``--target`` draws a reference level
  for a method:corruption, e.g. a paper's final accuracy) and training samples/s per epoch;
* ``throughput.csv``: per trial, epochs reached, runs (the first start, each ``--resume`` and each
  retry after a failure), median samples/s.

Trials are labelled ``method corruption s<seed>``, plus the Tune trial id where several trials
share that label (a search's candidates).

It prints the per-trial table and, where all trials ran at once, two aggregate rates: the sum of
the trials' median training rates, and the samples all trials trained per second of wall time
while all of them ran (evaluation, checkpoints and start-up included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import cli
from analysis.collect import DEFAULT_STORAGE, trial_folders, trial_results
from analysis.frame import AnalysisError
from trainables.metrics import KNN_ACC

COLUMNS = ("epoch", KNN_ACC, "knn_acc_init", "loss", "lr", "samples_per_s", "epoch_time_s", "timestamp")


def trial_curve(trial_dir: Path) -> pd.DataFrame:
    """One trial's per-epoch rows: ``COLUMNS`` plus ``run`` (0 for the first command, +1 per resume)."""
    from trainables.tune_adapter import REPLAYED, trial_config  # how a Tune config holds the flat config

    results = trial_results(trial_dir)
    rows, replays, run = [], [], -1
    for r in results:
        if "samples_per_s" not in r:  # an untrained reference (epochs 0) trains nothing
            continue
        run += r.get("iterations_since_restore") == 1
        row = {"run": max(run, 0), **{k: r.get(k) for k in COLUMNS}}
        if r.get(REPLAYED):  # an epoch trained before a resume, reported again: the timestamp is the resume's
            replays.append({**row, "timestamp": None})
        else:
            rows.append(row)
    trained = {row["epoch"] for row in rows}
    redone = len(rows) - len(trained)  # a resume re-runs the epochs after its checkpoint
    rows += [row for row in replays if row["epoch"] not in trained]  # epochs whose own report never came
    if not rows:
        return pd.DataFrame(columns=["run", *COLUMNS])
    cfg = trial_config(results[-1].get("config", {}))
    df = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
    df["samples"] = df["samples_per_s"] * df["epoch_time_s"]
    for key, name in (("method", "method"), ("data.corruption", "corruption"), ("system.seed", "seed")):
        df[name] = cfg.get(key)
    df["trial"] = f"{cfg.get('method')} {cfg.get('data.corruption')} s{cfg.get('system.seed')}"
    df["trial_id"] = results[-1].get("trial_id")
    df["redone"] = redone
    return df.reset_index(drop=True)


def curves_frame(folder: Path) -> pd.DataFrame:
    """Every trained trial's curve in one frame (rows: trial x epoch)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnalysisError(f"no Tune experiment folder {str(folder)!r}")
    parts = [trial_curve(d) for _, d in sorted(trial_folders(folder).items())]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise AnalysisError(f"no trial in {str(folder)!r} has reported an epoch yet")
    df = pd.concat(parts, ignore_index=True)
    shared = df.groupby("trial")["trial_id"].transform("nunique") > 1  # a search's candidates share a label
    df.loc[shared, "trial"] = df.loc[shared, "trial"] + " " + df.loc[shared, "trial_id"].astype(str)
    return df


def throughput_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial: epochs reached, runs, epochs re-run after resumes, median/min/max samples/s, last kNN."""
    g = curves.groupby("trial", sort=False)
    return pd.DataFrame(
        {
            "epochs": g["epoch"].max(),
            "runs": g["run"].nunique(),
            "redone": g["redone"].first(),
            "median_samples_per_s": g["samples_per_s"].median(),
            "min": g["samples_per_s"].min(),
            "max": g["samples_per_s"].max(),
            "last_knn": g[KNN_ACC].last(),
        }
    )


def wall_rate(curves: pd.DataFrame) -> tuple[float, float]:
    """(samples/s, seconds): samples trained per wall second in the windows where every trial ran.

    A window is one run (command): from the latest trial's first report to the earliest trial's
    last report; an epoch counts when its report falls inside. Timestamps are whole seconds.
    """
    samples = seconds = 0.0
    for _, run in curves.groupby("run"):
        per_trial = run.groupby("trial")["timestamp"]
        start, end = per_trial.min().max(), per_trial.max().min()
        if run["trial"].nunique() < curves["trial"].nunique() or end <= start:
            continue
        inside = run[(run["timestamp"] > start) & (run["timestamp"] <= end)]
        samples += inside["samples"].sum()
        seconds += end - start
    return (samples / seconds if seconds else float("nan")), seconds


def curves_figure(curves: pd.DataFrame, targets: dict[tuple[str, str], float]):
    """kNN accuracy per epoch (left) and training samples/s per epoch (right), one line per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {t: f"C{i}" for i, t in enumerate(curves["trial"].unique())}
    for trial, df in curves.groupby("trial", sort=False):
        acc.plot(df["epoch"], df[KNN_ACC], color=colors[trial], label=trial)
        speed.plot(df["epoch"], df["samples_per_s"], color=colors[trial], label=trial)
        resumed = df[df["run"].diff() > 0]  # first epoch of each resumed run
        acc.plot(resumed["epoch"], resumed[KNN_ACC], "o", color=colors[trial], markersize=4)
        key = (df["method"].iloc[0], df["corruption"].iloc[0])
        if key in targets:
            acc.axhline(targets[key], color=colors[trial], linestyle="--", linewidth=1)
    acc.set(xlabel="epoch", ylabel="kNN accuracy (%)", title="kNN accuracy per epoch (dots: resumed; dashed: --target)")
    speed.set(xlabel="epoch", ylabel="training samples/s", title="throughput per trial", yscale="log")
    acc.legend(fontsize=8)
    acc.grid(alpha=0.3)
    speed.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def parse_target(text: str) -> tuple[tuple[str, str], float]:
    """``method:corruption=value`` -> ((method, corruption), value)."""
    key, eq, value = text.partition("=")
    method, colon, corruption = key.partition(":")
    try:
        if not (eq and colon and method and corruption):
            raise ValueError
        return (method, corruption), float(value)
    except ValueError:
        raise AnalysisError(
            f"--target {text!r} is invalid; valid: method:corruption=value, e.g. moco_v2:ori=82.44"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.curves", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    p.add_argument("--experiment", required=True, help="Tune experiment name (folder under --storage-path)")
    p.add_argument("--storage-path", type=Path, default=DEFAULT_STORAGE, help="the sweep's --storage-path")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <storage>/analysis/<experiment>)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="METHOD:CORRUPTION=VALUE",
        help="reference kNN accuracy drawn as a dashed line (repeatable)",
    )
    return cli.run(_main, p.parse_args(argv))  # AnalysisError -> one line on stderr, exit 2


def _main(args: argparse.Namespace) -> None:
    targets = dict(parse_target(t) for t in args.target)
    curves = curves_frame(args.storage_path.resolve() / args.experiment)
    out = args.out or args.storage_path / "analysis" / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    table = throughput_table(curves)
    curves.to_csv(out / "curves.csv", index=False)
    table.to_csv(out / "throughput.csv")
    curves_figure(curves, targets).savefig(out / "curves.png", dpi=120)
    rate, seconds = wall_rate(curves)
    print(table.round(1).to_string())
    if seconds:
        print(
            f"aggregate: {table['median_samples_per_s'].sum():.0f} samples/s (sum of trial medians, training only); "
            f"{rate:.0f} samples/s over {seconds:.0f} s of wall time with every trial running"
        )
    else:
        print("aggregate: none (the trials never all ran at once)")
    print(f"wrote {out / 'curves.csv'}, {out / 'throughput.csv'}, {out / 'curves.png'}")


if __name__ == "__main__":
    sys.exit(main())
