"""Small helpers shared by the benchmark scripts: timing and the JSON last line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def run_times(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``fn()`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    return min(run_times(fn, repeats, warmup))


def sync(device: str) -> None:
    """Wait for a CUDA device's queued work (timers must not stop before it ends); a CPU: nothing."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def emit(result: dict) -> None:
    """Print the result as the last line: one JSON object (with a ``ratio`` field)."""
    assert "ratio" in result, result
    print(json.dumps(result, sort_keys=True))
