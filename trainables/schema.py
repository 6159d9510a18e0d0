"""Where a trial's record lives and what it is called, defined once for every layer.

A sweep writes, and analysis reads: the flat trial config inside a Tune config, the trial folder's
files, the MLflow tags that tie runs together, and the default storage. No Ray, no torch, no
MLflow here, so ``trainables`` (the Ray adapter), ``sweeps`` and ``analysis`` all import it and
``import analysis.collect`` stays free of Ray.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# --- the trial config inside Tune's config -------------------------------------------------
SWEEP_PREFIX = "sweep."  # Tune config keys that are not trial config (the cell, resources, fault injection)
CELL_KEY = "sweep.cell"  # a sweep's complete flat config of one trial


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """The flat TrialConfig of a Tune config.

    Sweeps put each trial's complete flat config under ``sweep.cell`` (a grid over cells);
    searchers sample flat keys at the top level, which override the cell. Other ``sweep.*``
    keys (resources, fault injection) are not part of the trial config.
    """
    top = {k: v for k, v in config.items() if not k.startswith(SWEEP_PREFIX)}
    return {**config.get(CELL_KEY, {}), **top}


# --- a trial folder (<storage>/<experiment>/<arm>-<corruption>-s<seed>-<trial id>/) ------------
STATE_FILE = "state.pt"  # in checkpoint_NNNNNN/: torch.save dict (method, optimizer, generators, history)
RESULT_FILE = "result.json"  # Tune's JSON lines, one report each
CRASH_LOG = "worker_crash.log"  # faulthandler's output
EPOCH_FILE = "epoch.txt"  # beside STATE_FILE: the epoch that state ends
TRAIN_RUN_DIR = "data_parallel"  # in a data-parallel trial's folder: Ray Train's run (its checkpoint_<time>/)


def checkpoint_files(experiment_dir: Path, trial_id: str) -> list[Path]:
    """Every checkpoint state file of one trial in a Tune experiment folder. The trial's folder holds
    its id: ``<arm>-<corruption>-s<seed>-<id>`` (``sweeps.execute.trial_dirname``), or Tune's own
    ``train_<id>_<index>_...`` in sweeps launched before readable names. A data-parallel trial's
    checkpoints are Ray Train's, in ``<trial folder>/data_parallel/``."""
    folders = Path(experiment_dir).glob(f"*{trial_id}*")
    return [path for folder in folders for path in trial_checkpoints(folder)]


def trial_checkpoints(trial_dir: Path) -> list[Path]:
    """Every checkpoint state file in one trial folder (Tune's or Ray Train's), in training order:
    by the epoch each ends (``EPOCH_FILE``), then by name (checkpoints from before the epoch file).

    Not by name alone: a trial resumed from an older Tune snapshot numbers its checkpoints from that
    snapshot, so the killed launch's higher-numbered folder can hold an earlier epoch. Not by write
    time: a copied experiment (``cp -r``, ``scp -r``) loses it.
    """
    found = [
        *Path(trial_dir).glob(f"checkpoint_*/{STATE_FILE}"),
        *Path(trial_dir).glob(f"{TRAIN_RUN_DIR}/checkpoint_*/{STATE_FILE}"),
    ]
    return sorted(found, key=lambda state: (state_epoch(state), state.parent.name))


def save_state(state: dict, folder: Path) -> None:
    """A resumable state (``run_trial``'s ``save``) as a checkpoint folder's files: ``STATE_FILE``
    and ``EPOCH_FILE``, the epoch it ends, readable without loading the state."""
    import torch

    torch.save(state, Path(folder) / STATE_FILE)
    (Path(folder) / EPOCH_FILE).write_text(str(int(state["epoch"])))


def state_epoch(state_file: Path) -> int:
    """The epoch a checkpoint's state ends, from its ``EPOCH_FILE``; -1 for one written before it."""
    try:
        return int((state_file.parent / EPOCH_FILE).read_text())
    except (OSError, ValueError):  # a checkpoint from before the epoch file
        return -1


# --- MLflow: one parent run per sweep, one child run per trial ----------------------------------
PARENT_TAG = "mlflow.parentRunId"  # on a trial's run: its sweep's run
TRIAL_TAG = "ray_trial_id"  # on a trial's run: Tune's trial id (how a resumed sweep finds the run)
STORAGE_TAG = "storage_path"  # on the parent run: the sweep's Tune folder, which tells two sweeps apart
FINAL_METRICS = "final_metrics.json"  # a trial run's artifact: its final report
PER_CLASS_ARTIFACT = (
    "per_class.json"  # a trial run's artifact: {name: {class: final value}} (trainables.metrics.PER_CLASS)
)

# --- storage defaults ----------------------------------------------------------------------
DEFAULT_STORAGE = Path("runs")  # relative to where the sweep is launched
MLFLOW_DB = "mlflow.db"  # the default store: sqlite beside the Tune folders


def default_uri(storage: Path = DEFAULT_STORAGE) -> str:
    """The sweeps' default store: ``sqlite:///<abs storage>/mlflow.db``."""
    return f"sqlite:///{Path(storage).expanduser().resolve() / MLFLOW_DB}"


@contextlib.contextmanager
def store_lock(uri: str, exclusive: bool = True) -> Iterator[None]:
    """Hold the lock file beside a SQLite store (``<db>.lock``) for the block.

    Exclusive: while creating the store's tables (``sweeps.store.ensure_store``; MLflow's migration
    breaks when two processes run it at once). Shared: a reader waits until a store being created is
    complete; without a lock file (a store made otherwise) it does not wait, and it only reads the
    file, so a read-only folder is fine. Other URIs: no lock.
    """
    lock = Path(uri.removeprefix("sqlite:///") + ".lock") if uri.startswith("sqlite:///") else None
    if lock is None or (not exclusive and not lock.is_file()):
        yield
        return
    with open(lock, "a" if exclusive else "r") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)  # released when the file closes
        yield
