"""Trials of a sweep -> one tidy DataFrame. The only analysis module that knows the stores.

Two sources, the same columns:

* MLflow (what ``sweeps.tracking`` writes): experiment = sweep name, one parent run (tags
  ``sweep=parent``, ``storage_path``) and one child run per trial (tags ``mlflow.parentRunId``,
  ``ray_trial_id``); an experiment holding two sweeps is refused unless one is chosen; params = the flat trial config, JSON-encoded (strings raw); metrics per
  epoch with step = epoch; artifact ``final_metrics.json`` (lists included).
* a Tune experiment folder ``<storage>/<experiment>/<trial_dir>/result.json`` (one JSON line
  per report; the flat config under ``config["sweep.cell"]``), with checkpoints in
  ``<trial_dir>/checkpoint_NNNNNN/state.pt``.

Rows: ``run_id``, ``trial_id``, ``status``, ``trial_dir``, ``checkpoint``, the flat config
(``method``, ``data.corruption``, ``system.seed``, ``optim.epochs``, ...) and the final metrics
(``knn_acc``, ``probe_acc``, ``uniformity``, ``ece``, ``alignment``, ``classwise_uniformity``
(list), ``feature_distance`` (list of lists), ...).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.frame import AnalysisError
from trainables.metrics import KNN_ACC, UNIFORMITY
from trainables.schema import (  # noqa: F401  (DEFAULT_STORAGE, default_uri: re-exported for analysis.cli)
    DEFAULT_STORAGE,
    FINAL_METRICS,
    PARENT_TAG,
    RESULT_FILE,
    STATE_FILE,
    STORAGE_TAG,
    TRIAL_TAG,
    default_uri,
    store_lock,
    trial_checkpoints,
    trial_config,
)

REPORT_FOLDER = "analysis"
RECORDED_CONFIG = "recorded_config"  # column: the trial's flat config as recorded (a dict), for rebuilding it


def storage_of(uri: str) -> Path | None:
    """The sweep storage folder next to a sqlite store (where Tune keeps trial folders)."""
    return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None


def client_for(uri: str):
    """An MlflowClient; a sqlite file that does not exist is an error (never created here)."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise AnalysisError(f"no MLflow store at {uri!r}; run a sweep first, or pass --mlflow-uri / --storage-path")
    client = MlflowClient(uri)
    with store_lock(uri, exclusive=False):  # a sweep may be creating the store's tables this moment
        client.search_experiments(max_results=1)
    return client


def experiment_id(client, experiment: str) -> str:
    """Id of a named experiment; unknown names raise listing the existing ones."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise AnalysisError(f"unknown experiment {experiment!r}; existing: {', '.join(names) or 'none'}")
    return exp.experiment_id


def sweep_parent(client, experiment: str, sweep: str | None = None) -> str | None:
    """The parent run of the experiment's sweep (None for runs without one).

    An experiment written twice (the same name into one store from two storage folders, or after
    the Tune folder was deleted) holds two sweeps of the same trials; pooled, every trial would count
    twice as if it were another seed. Refused unless ``sweep`` (a parent run id) picks one.
    """
    exp_id = experiment_id(client, experiment)
    parents = client.search_runs(
        [exp_id], "tags.sweep = 'parent'", max_results=1000, order_by=["attributes.start_time ASC"]
    )
    listed = ", ".join(_describe_parent(p) for p in parents) or "none"
    if sweep is not None:
        if sweep not in {p.info.run_id for p in parents}:
            raise AnalysisError(f"--sweep {sweep!r} is not a sweep of experiment {experiment!r}; its sweeps: {listed}")
        return sweep
    if len(parents) > 1:
        raise AnalysisError(
            f"experiment {experiment!r} holds {len(parents)} sweeps ({listed}); pooled, each trial would "
            f"count once per sweep; valid: --sweep PARENT_RUN_ID"
        )
    return parents[0].info.run_id if parents else None


def _describe_parent(run) -> str:
    """``<run id> (from <storage>, started <time>)``."""
    import datetime

    started = datetime.datetime.fromtimestamp(run.info.start_time / 1000).strftime("%Y-%m-%d %H:%M")
    where = f"from {run.data.tags[STORAGE_TAG]}, " if STORAGE_TAG in run.data.tags else ""
    return f"{run.info.run_id} ({where}started {started})"


def load_runs(
    experiment: str,
    uri: str | None = None,
    storage: Path | None = None,
    finished_only: bool = True,
    sweep: str | None = None,
) -> pd.DataFrame:
    """One row per trial of an MLflow experiment written by a sweep.

    Args:
        experiment: the MLflow experiment (= sweep) name.
        uri: tracking URI; default the sweeps' ``sqlite:///<abs ./runs>/mlflow.db``.
        storage: the Tune storage folder, to find trial folders and checkpoints
            (default: the sqlite store's folder).
        finished_only: drop runs whose status is not FINISHED.
        sweep: the parent run id of one sweep, where the experiment holds several (see ``sweep_parent``).

    Returns:
        The trial frame described in the module docstring (one row per child run).
    """
    uri = uri or default_uri()
    client = client_for(uri)
    exp_id = experiment_id(client, experiment)
    parent = sweep_parent(client, experiment, sweep)
    children = f"tags.`{PARENT_TAG}` = '{parent}'" if parent else f"tags.`{PARENT_TAG}` != ''"
    runs = client.search_runs([exp_id], children, max_results=50_000)
    storage = storage or storage_of(uri)
    folders = trial_folders(Path(storage) / experiment) if storage else {}
    rows = [_mlflow_row(client, run, folders) for run in runs]
    df = pd.DataFrame(rows)
    if finished_only and len(df):
        df = df[df["status"] == "FINISHED"].reset_index(drop=True)
    return df


def _mlflow_row(client, run, folders: dict[str, Path]) -> dict[str, Any]:
    info, data = run.info, run.data
    trial_id = data.tags.get(TRIAL_TAG, "")
    folder = folders.get(trial_id)
    row = {
        "run_id": info.run_id,
        "trial_id": trial_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "trial_dir": str(folder) if folder else None,
        "checkpoint": _checkpoint(folder),
    }
    config = {k: _decode(v) for k, v in data.params.items()}  # the flat config, as the sweep recorded it
    row.update(config)
    row[RECORDED_CONFIG] = config
    row.update(data.metrics)  # last value per key; an epochs-0 trial logs no epoch metrics
    row.update(_read_json_artifact(client, run, FINAL_METRICS) or {})  # per-class values included
    return row


def _decode(value: str) -> Any:
    """Params are JSON-encoded except strings, which are stored raw."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def _read_json_artifact(client, run, name: str) -> dict | None:
    uri = run.info.artifact_uri
    if uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        path = Path(local_file_uri_to_path(uri)) / name
        return json.loads(path.read_text()) if path.is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        try:
            return json.loads(Path(client.download_artifacts(run.info.run_id, name, folder)).read_text())
        except Exception:  # a missing artifact: MlflowException or OSError, by store
            return None


def sweep_info(experiment: str, uri: str | None = None, sweep: str | None = None) -> dict[str, Any]:
    """The sweep's parent run: id, status, tags (code and library versions) and wall time."""
    uri = uri or default_uri()
    client = client_for(uri)
    parent = sweep_parent(client, experiment, sweep)
    if parent is None:
        return {"parent_run_id": None, "tags": {}, "wall_s": None, "status": None}
    run = client.get_run(parent)
    end = run.info.end_time
    return {
        "parent_run_id": run.info.run_id,
        "status": run.info.status,
        "tags": dict(run.data.tags),
        "start_time": run.info.start_time,
        "wall_s": (end - run.info.start_time) / 1000 if end else None,
    }


def log_report(path: Path, parent_run_id: str, uri: str | None = None) -> None:
    """Attach a report file to the sweep's parent run (artifact folder ``analysis/``)."""
    client_for(uri or default_uri()).log_artifact(parent_run_id, str(path), REPORT_FOLDER)


def histories(
    df: pd.DataFrame, keys: tuple[str, ...] = (UNIFORMITY, KNN_ACC, "loss"), uri: str | None = None
) -> pd.DataFrame:
    """Per-epoch metric values of the frame's trials, long form.

    MLflow rows (a ``run_id`` and ``uri``) read the metric history; others read the trial
    folder's ``result.json``. A key ending in ``/`` is a prefix: every metric under it
    (``"classwise_uniformity/"`` gives one metric per class). Per-class values are not MLflow
    metrics (the run keeps the final ones in ``per_class.json``), so prefix keys come from the
    trial folder whenever it is there, and from the metric history of runs recorded before that.

    Returns:
        Columns ``run_id``, ``trial_id``, ``epoch``, ``metric``, ``value``.
    """
    client = client_for(uri) if uri else None
    rows = []
    for _, trial in df.iterrows():
        folder = Path(trial["trial_dir"]) if isinstance(trial.get("trial_dir"), str) else None
        on_disk = folder is not None and folder.is_dir()
        from_folder = tuple(k for k in keys if on_disk and (client is None or k.endswith("/")))
        points = [
            (r.get("epoch"), key, r[key])
            for r in (trial_results(folder) if from_folder else ())
            for key in _matching(from_folder, r)
            if isinstance(r.get(key), (int, float))
        ]
        from_mlflow = tuple(k for k in keys if k not in from_folder)
        if client is not None and isinstance(trial.get("run_id"), str) and from_mlflow:
            prefixed = any(k.endswith("/") for k in from_mlflow)  # only then list the run's metric names
            logged = client.get_run(trial["run_id"]).data.metrics if prefixed else ()
            points += [
                (m.step, key, m.value)
                for key in _matching(from_mlflow, logged)
                for m in client.get_metric_history(trial["run_id"], key)
            ]
        rows += [
            {
                "run_id": trial.get("run_id"),
                "trial_id": trial.get("trial_id"),
                "epoch": int(e),
                "metric": k,
                "value": float(v),
            }
            for e, k, v in points
            if e is not None
        ]
    return pd.DataFrame(rows, columns=["run_id", "trial_id", "epoch", "metric", "value"])


def _matching(keys: tuple[str, ...], available) -> list[str]:
    """``keys`` with each prefix key (ending in ``/``) expanded to the available keys under it."""
    out = []
    for key in keys:
        out += sorted(k for k in available if k.startswith(key)) if key.endswith("/") else [key]
    return out


def load_tune(folder: Path, finished_only: bool = True) -> pd.DataFrame:
    """One row per trial of a Tune experiment folder (``<storage>/<experiment>``)."""
    folder = Path(folder)
    if not folder.is_dir():
        siblings = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
        raise AnalysisError(f"no Tune experiment folder {str(folder)!r}; existing: {', '.join(siblings) or 'none'}")
    rows = []
    for trial_id, trial_dir in sorted(trial_folders(folder).items()):
        results = trial_results(trial_dir)
        if not results:
            continue
        last = results[-1]
        config = trial_config(last.get("config", {}))
        row = {
            "run_id": None,
            "trial_id": trial_id,
            "status": "FINISHED" if last.get("done") else "UNFINISHED",
            "trial_dir": str(trial_dir),
            "checkpoint": _checkpoint(trial_dir),
            **config,
            RECORDED_CONFIG: config,
        }
        row.update({k: v for k, v in last.items() if k not in ("config", "done")})
        rows.append(row)
    df = pd.DataFrame(rows)
    if finished_only and len(df):
        df = df[df["status"] == "FINISHED"].reset_index(drop=True)
    return df


def trial_results(trial_dir: Path) -> list[dict]:
    """Every result Tune recorded for one trial folder (``result.json``, one object per report)."""
    path = trial_dir / RESULT_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_folders(experiment_dir: Path) -> dict[str, Path]:
    """trial_id -> trial folder, read from each folder's first result line."""
    out = {}
    if not experiment_dir.is_dir():
        return out
    for path in experiment_dir.glob(f"*/{RESULT_FILE}"):
        with path.open() as f:
            first = f.readline()
        if first.strip():
            out[json.loads(first)["trial_id"]] = path.parent
    return out


def _checkpoint(trial_dir: Path | None) -> str | None:
    """The latest ``checkpoint_*/state.pt`` of a trial folder, if any."""
    if trial_dir is None:
        return None
    found = trial_checkpoints(Path(trial_dir))  # a trial has Tune's or (data-parallel) Ray Train's
    return str(found[-1]) if found else None
