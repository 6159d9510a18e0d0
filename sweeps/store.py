"""The sweep's MLflow store, created safely when several processes may open it first.

Only MLflow is imported here (no Ray, no torch), so a process that merely reads a store stays light.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient


def ensure_store(uri: str) -> None:
    """Create (or upgrade) a SQLite store's tables now, one process at a time.

    MLflow's schema migration is not safe to run concurrently: processes that open one new store at
    the same moment fail ("duplicate column name", "table ... already exists"), and can leave it
    unusable (measured: 4 processes at once, 3 of 4 failed, and once all 4 with the store left
    broken). Every process of ours that may be first (the driver when it opens the sweep's parent
    run, readers polling a starting sweep) takes a lock file beside the database first; a store that
    exists costs one query. Other URIs: nothing to do.
    """
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///"))
    with open(path.with_name(path.name + ".lock"), "a") as lock, _quiet(*MIGRATION_LOGGERS):
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        MlflowClient(uri).search_experiments(max_results=1)


MIGRATION_LOGGERS = (
    "mlflow.store.db.utils",
    "alembic.runtime.migration",
)  # "Creating initial MLflow database tables..."


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Hide the named loggers' INFO lines (a new store's migration steps) for the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
