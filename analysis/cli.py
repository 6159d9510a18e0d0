"""What every ``python -m analysis.<name>`` command shares: flags, loading, errors, output.

    python -m analysis.<name> --experiment NAME [--mlflow-uri URI] [--storage-path DIR]
                              [--source mlflow|tune] [--out DIR] [--metric knn_acc|probe_acc]

Bad inputs (an unknown experiment, a missing store, no clean trial) print one line
``error: ...`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.frame import AnalysisError
from trainables.metrics import KNN_ACC, KNN_ACC_STUDY, PROBE_ACC

METRICS = (KNN_ACC, KNN_ACC_STUDY, PROBE_ACC)


@dataclasses.dataclass
class Source:
    """Where a frame came from and where outputs go."""

    experiment: str
    uri: str | None  # None for a Tune folder
    storage: Path | None
    out: Path


def _prog() -> str:
    """``python -m analysis.drops`` as the program name (argparse would say ``drops.py``); a console
    script (``sbl-report``) keeps its own name."""
    script = Path(sys.argv[0])
    return (
        f"python -m analysis.{script.stem}"
        if script.suffix == ".py" and script.parent.name == "analysis"
        else script.name
    )


def parser(doc: str, metric: bool = False) -> argparse.ArgumentParser:
    """The shared flags; ``doc`` is the module docstring (first paragraph = description)."""
    p = argparse.ArgumentParser(
        prog=_prog(),
        description=doc.split("\n\n")[0].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--experiment", required=True, help="the sweep's experiment name (MLflow and Tune)")
    p.add_argument("--mlflow-uri", help="tracking store (default: sqlite:///<abs --storage-path>/mlflow.db)")
    p.add_argument(
        "--storage-path", type=Path, help="the sweep's storage folder (default: ./runs, or the sqlite store's folder)"
    )
    p.add_argument(
        "--source",
        choices=("mlflow", "tune"),
        default="mlflow",
        help="read MLflow runs or the Tune folder <storage>/<experiment>",
    )
    p.add_argument(
        "--sweep",
        metavar="PARENT_RUN_ID",
        help="where the experiment holds several sweeps: the parent run of the one to read",
    )
    p.add_argument("--out", type=Path, help="output folder (default: <storage>/analysis/<experiment>)")
    if metric:
        p.add_argument("--metric", choices=METRICS, default=KNN_ACC, help="accuracy to analyse (default: %(default)s)")
    return p


def load(args: argparse.Namespace, need_clean: bool = False) -> tuple[pd.DataFrame, Source]:
    """The experiment's finished trials and its Source; raises AnalysisError on bad input."""
    from analysis import collect
    from analysis.drops import require_clean

    storage = args.storage_path.expanduser().resolve() if args.storage_path else None
    if args.source == "tune":
        uri = None
        storage = storage or collect.DEFAULT_STORAGE.resolve()
        df = collect.load_tune(storage / args.experiment)
    else:
        uri = args.mlflow_uri or collect.default_uri(storage or collect.DEFAULT_STORAGE)
        check_store(uri)
        storage = storage or collect.storage_of(uri)
        df = collect.load_runs(args.experiment, uri, storage, sweep=args.sweep)
    if df.empty:
        raise AnalysisError(f"experiment {args.experiment!r} has no finished trials")
    if need_clean:
        require_clean(df, args.experiment)
    out = args.out or (storage or collect.DEFAULT_STORAGE.resolve()) / "analysis" / args.experiment
    out.mkdir(parents=True, exist_ok=True)
    return df, Source(args.experiment, uri, storage, out)


SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = {"experiments", "runs"}


def check_store(uri: str) -> None:
    """A ``sqlite:///`` store must be an MLflow database; the file is only read (MLflow would turn an
    empty file or another program's database into an empty MLflow store, and fail on garbage)."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.is_file():
        return  # collect.client_for: "no MLflow store at ..."
    valid = "valid: the mlflow.db a sweep wrote (--mlflow-uri sqlite:///<abs path> or --storage-path)"
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        raise AnalysisError(f"MLflow store {str(path)!r} is an empty file, not a database; {valid}")
    if header != SQLITE_HEADER:
        raise AnalysisError(f"MLflow store {str(path)!r} is not an SQLite database; {valid}")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise AnalysisError(f"MLflow store {str(path)!r} cannot be read ({err}); {valid}") from None
    if not MLFLOW_TABLES <= tables:
        raise AnalysisError(
            f"MLflow store {str(path)!r} is an SQLite database without MLflow's tables ({', '.join(sorted(MLFLOW_TABLES))}); {valid}"
        )


def run(body: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run a command body; AnalysisError becomes ``error: <one line>`` and exit status 2."""
    try:
        body(args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
