"""The gradient probe: measurements in forked children of a subprocess, deaths reported as such."""

from __future__ import annotations

import os
import signal
import time

from trainables import gradient_probe
from trainables.gradient_probe import CHANNELS_LAST, Shape


def test_in_child__reports_the_signal_and_a_timeout():
    _, error = gradient_probe._in_child(lambda fd: os.kill(os.getpid(), signal.SIGSEGV), timeout_s=30)
    assert error == "SIGSEGV"
    _, error = gradient_probe._in_child(lambda fd: time.sleep(30), timeout_s=0.5)
    assert error.startswith("timeout")  # the child was stopped, not waited for


def test_run_jobs__every_job_gets_its_steps_after_one_dies():
    """Real subprocess. The first job is issue 23's crashing shape on AVX-512 (fp32, 1/8 width,
    64 px): where it dies, the next job must still come back from a fresh fork."""
    crashing = Shape(width=0.125, image_size=(64, 64), batch=8)
    tiny = Shape(width=0.0625, small_stem=False, image_size=(32, 32), batch=4)
    results = list(gradient_probe.run_jobs([(crashing, ("nchw", CHANNELS_LAST)), (tiny, ("nchw", CHANNELS_LAST))]))
    assert [len(r) for r in results] == [2, 2]
    assert results[0][0]["rel_err"] < 1e-4 and results[1][0]["rel_err"] < 1e-4  # NCHW fp32 vs the fp64 reference
    assert results[1][1]["diff"] < 1e-4
    died = results[0][1].get("error")
    print(f"channels_last at {crashing.short()}: {died or 'ran'}")  # SIGSEGV/SIGABRT/SIGBUS on the AVX-512 EPYC
