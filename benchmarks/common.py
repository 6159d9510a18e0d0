"""Small helpers shared by the benchmark scripts: timing and the JSON last line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def emit(result: dict) -> None:
    """Print the result as the last line: one JSON object (with a ``ratio`` field)."""
    assert "ratio" in result, result
    print(json.dumps(result, sort_keys=True))
