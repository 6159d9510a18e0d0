"""Driver-side reports of a trial's worker: a death by signal (from its faulthandler log) and the
memory format it trained in, printed once."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from sweeps.progress import Progress
from trainables.tune_adapter import CRASH_LOG, crash_report

CONFIG = {"sweep.cell": {"method": "supervised", "data.corruption": "ori", "system.seed": 0}}


def _crashed_worker(folder) -> None:
    """A real faulthandler log: a process that enables it the way the trainable does, then segfaults
    inside a function called ``training_step`` in a module under ``trainables/``."""
    code = f"""
import ctypes, faulthandler, os, sys
log = open({str(folder / CRASH_LOG)!r}, "a")
log.write("--- worker pid %d, stderr /nonexistent/worker.err\\n" % os.getpid()); log.flush()
faulthandler.enable(file=log, all_threads=True)
sys.path.insert(0, {str(folder)!r})
import trainables_fake
trainables_fake.training_step()
"""
    (folder / "trainables_fake.py").write_text("import ctypes\n\ndef training_step():\n    ctypes.string_at(0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -11, done.stderr


def test_crash_report__names_the_signal_and_shows_the_crashing_frames(tmp_path):
    _crashed_worker(tmp_path)
    report = crash_report(SimpleNamespace(local_path=str(tmp_path)))
    assert report.startswith("SIGSEGV in the worker; last lines of its log:")
    assert "Fatal Python error: Segmentation fault" in report and "training_step" in report


def test_crash_report__none_without_a_fatal_signal(tmp_path):
    assert crash_report(SimpleNamespace(local_path=str(tmp_path))) is None  # no log at all
    (tmp_path / CRASH_LOG).write_text("--- worker pid 1, stderr /x.err\n")  # ran, did not crash
    assert crash_report(SimpleNamespace(local_path=str(tmp_path))) is None
    assert crash_report(SimpleNamespace(local_path=None)) is None


def test_progress__a_crashed_trial_says_so_and_the_memory_format_shows_once(tmp_path, capsys):
    _crashed_worker(tmp_path)
    progress = Progress(total=2)
    crashed = SimpleNamespace(config=CONFIG, local_path=str(tmp_path), path=str(tmp_path), trial_id="a")
    progress.on_trial_error(0, [], crashed)
    out = capsys.readouterr().out
    assert "FAILED: trial " in out and "crashed: SIGSEGV in the worker; last lines of its log:" in out
    trial = SimpleNamespace(config=CONFIG, trial_id="b")
    result = {
        "epoch": 1,
        "loss": 1.0,
        "samples_per_s": 10.0,
        "memory_format": "contiguous",
        "memory_format_reason": "a channels_last step died in the canary (SIGSEGV)",
    }
    progress.on_trial_result(0, [], trial, result)
    progress.on_trial_result(0, [], trial, {**result, "epoch": 2})
    other = SimpleNamespace(config=CONFIG, trial_id="c")  # another trial on the same kind of machine
    progress.on_trial_result(0, [], other, result)
    progress.on_trial_result(
        0, [], other, {**result, "memory_format": "channels_last", "memory_format_reason": "canary passed"}
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("[contiguous: a channels_last step died in the canary (SIGSEGV)]")
    assert "contiguous" not in lines[1] and "contiguous" not in lines[2]
    assert lines[3].endswith("[channels_last: canary passed]")  # a new format or reason is shown again
