"""Small helpers shared by the benchmark scripts: timing and the JSON last line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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


def emit(result: dict) -> None:
    """Print the result as the last line: one JSON object (with a ``ratio`` field)."""
    assert "ratio" in result, result
    print(json.dumps(result, sort_keys=True))


def run_child(script: str, payload: dict, what: str) -> dict:
    """``python script --child`` in a fresh interpreter, ``payload`` as JSON on stdin.

    Returns the JSON object of its last stdout line; raises RuntimeError naming ``what`` with the
    tail of its stderr if it fails. Benchmarks use it for arms that must not share this process's
    threads (an OpenMP team, once rooted in a thread, lives as long as the thread).
    """
    proc = subprocess.run([sys.executable, script, "--child"], input=json.dumps(payload), text=True,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def on_new_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a new ``threading.Thread`` while this thread waits; its result, or its exception."""
    out: dict[str, object] = {}

    def work() -> None:
        try:
            out["result"] = fn()
        except BaseException as err:  # re-raised on the calling thread
            out["error"] = err

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["result"]
