"""trainables/tune_adapter.py: the worker's host-memory setting (the Tune path itself runs in tests/sweeps)."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_keep_freed_memory__sets_both_thresholds_where_glibc_is_the_allocator():
    # In a child process: the thresholds last for the life of the process that sets them.
    code = "from trainables.tune_adapter import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == str(platform.libc_ver()[0] == "glibc")
