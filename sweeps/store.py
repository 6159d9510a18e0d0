"""The sweep's MLflow store, created safely when several processes may open it first.

Only MLflow is imported here (no Ray, no torch), so a process that merely reads a store stays light.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from mlflow.tracking import MlflowClient

from trainables.schema import store_lock


def ensure_store(uri: str) -> None:
    """Create a new SQLite store's tables now, one process at a time.

    MLflow's schema migration is not safe to run concurrently: processes that open one new store at
    the same moment fail ("duplicate column name", "table ... already exists"), and can leave it
    unusable (measured: 4 processes at once, 3 of 4 failed, and once all 4 with the store left
    broken). Every driver of ours opens its store through here (``trainables.schema.store_lock``,
    exclusive), and readers wait on the same lock, shared; a store that exists costs one query.
    Other URIs: nothing to do.
    """
    if not uri.startswith("sqlite:///"):
        return
    with store_lock(uri), _quiet(*MIGRATION_LOGGERS):
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
