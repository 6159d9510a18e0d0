"""sweeps/records.py and the trainable's choice of checkpoint: what --resume reads from the experiment
folder after a driver was killed (fast: no Ray)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from sweeps import records
from sweeps.options import SweepError
from trainables.tune_adapter import STATE_FILE, _resume_state


def _folder(tmp_path):
    storage = tmp_path / "runs"
    (storage / "exp").mkdir(parents=True)
    (storage / "exp" / "tuner.pkl").write_bytes(b"")
    return storage, storage / "exp"


def test_check_trusted__own_folders_pass_and_others_writable_or_foreign_ones_are_refused(tmp_path):
    storage, exp = _folder(tmp_path)
    storage.chmod(0o755), exp.chmod(0o755)
    records.check_trusted(storage, exp)
    exp.chmod(0o775)
    with pytest.raises(SweepError, match=rf"{exp} is writable by its group .*chmod go-w"):
        records.check_trusted(storage, exp)
    exp.chmod(0o755)
    error = exp / "train_ab_00000_0_cell" / "error.pkl"  # unpickled for an errored trial
    error.parent.mkdir()
    error.write_bytes(b"")
    error.chmod(0o646)
    with pytest.raises(SweepError, match=rf"{error} is writable by others"):
        records.check_trusted(storage, exp)
    error.chmod(0o644)
    records.check_trusted(storage, exp)
    if os.getuid() == 0:
        os.chown(exp / "tuner.pkl", 65534, -1)
        with pytest.raises(SweepError, match=r"tuner.pkl belongs to uid 65534, not to you"):
            records.check_trusted(storage, exp)


def test_check_store__a_resume_into_another_store_is_refused_naming_both(tmp_path):
    _, exp = _folder(tmp_path)
    records.save_record(exp, "http://mlflow:5000")
    records.check_store(exp, "http://mlflow:5000/")
    with pytest.raises(SweepError, match=r"'sqlite:////x.db', but the sweep records its runs in 'http://mlflow:5000'"):
        records.check_store(exp, "sqlite:////x.db")


def test_trial_total__a_search_records_its_trials_for_the_resume_to_count(tmp_path):
    _, exp = _folder(tmp_path)
    records.save_record(exp, "sqlite:////x.db")
    assert records.trial_total(exp) is None  # a sweep recorded before the count
    records.save_trial_total(exp, 12)  # one base cell x num_samples 12
    assert records.trial_total(exp) == 12
    records.check_store(exp, "sqlite:////x.db")  # the rest of the record is kept


def _spawn_sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_stop_stale_ray__stops_only_recorded_processes_of_a_dead_driver(tmp_path):
    _, exp = _folder(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_start = records._start_time(dead.pid)
    dead.wait()
    left, reused = _spawn_sleeper(), _spawn_sleeper()
    try:
        record = {
            "host": socket.gethostname(),
            "boot": records._boot_id(),
            "pid": dead.pid,
            "start": dead_start,
            "ray": {str(left.pid): records._start_time(left.pid), str(reused.pid): records._start_time(reused.pid) - 1},
        }  # the pid of another process now
        (exp / records.DRIVER_FILE).write_text(json.dumps(record))
        records.check_driver_gone(exp)  # the driver is dead: resuming is fine
        assert records.stop_stale_ray(exp, grace_s=5) == [left.pid]
        assert left.wait(timeout=10) is not None
        assert reused.poll() is None  # not ours any more: untouched
        assert not (exp / records.DRIVER_FILE).exists()
    finally:
        for proc in (left, reused):
            proc.kill()
            proc.wait()


def test_check_driver_gone__a_driver_still_running_is_refused_and_its_processes_kept(tmp_path):
    _, exp = _folder(tmp_path)
    child = _spawn_sleeper()
    try:
        records.record_driver(exp)  # this process is the driver; the sleeper its child
        recorded = json.loads((exp / records.DRIVER_FILE).read_text())
        assert recorded["pid"] == os.getpid() and str(child.pid) in recorded["ray"]
        with pytest.raises(SweepError, match=rf"still being run by pid {os.getpid()}"):
            records.check_driver_gone(exp)
        assert records.stop_stale_ray(exp) == [] and child.poll() is None
        records.forget_driver(exp)
        records.check_driver_gone(exp)
    finally:
        child.kill()
        child.wait()


def _checkpoint(exp, folder: str, index: int, epoch: int, torn: bool = False):
    path = exp / folder / f"checkpoint_{index:06d}" / STATE_FILE
    path.parent.mkdir(parents=True)
    torch.save({"epoch": epoch}, path)
    if torn:
        path.write_bytes(path.read_bytes()[:20])
    time.sleep(0.02)  # distinct mtimes
    return path


def test_resume_state__the_newest_loadable_checkpoint_of_the_trial_in_any_of_its_folders(tmp_path, capsys):
    exp = tmp_path / "exp"
    _checkpoint(exp, "train_ab_00001_1_cell_2026-01-01_00-00-00", 0, 1)
    _checkpoint(exp, "train_ab_00001_1_cell_2026-01-01_00-00-00", 1, 2)
    _checkpoint(exp, "train_ab_00011_3_cell_2026-01-01_00-00-00", 0, 9)  # another trial
    assert _resume_state(None, str(exp), "ab_00001")[0]["epoch"] == 2
    # Restored from a stale snapshot, the trial restarted in a new folder and its checkpoint index
    # restarted too: the newest written wins, not the highest index.
    _checkpoint(exp, "train_ab_00001_1_cell_2026-01-01_01-00-00", 0, 3)
    assert _resume_state(None, str(exp), "ab_00001")[0]["epoch"] == 3
    _checkpoint(exp, "train_ab_00001_1_cell_2026-01-01_01-00-00", 1, 4, torn=True)  # killed mid-write
    assert _resume_state(None, str(exp), "ab_00001")[0]["epoch"] == 3
    assert "skipping checkpoint" in capsys.readouterr().err
    assert _resume_state(None, str(exp), "ab_00002") == (None, None)


def test_resume_state__the_latest_epoch_wins_over_the_latest_write(tmp_path):
    """Copied experiments lose write times: with epoch files, the checkpoint of the latest epoch is
    the one to resume from, whichever was written last."""
    import os

    from trainables.schema import save_state

    exp = tmp_path / "exp"
    for index, epoch, written in ((4, 8, 100.0), (5, 5, 300.0)):
        folder = exp / "supervised-ori-s0-ab_00001" / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        save_state({"epoch": epoch}, folder)
        os.utime(folder / "state.pt", (written, written))
    assert _resume_state(None, str(exp), "ab_00001")[0]["epoch"] == 8


def test_stand_ins__fill_pruned_checkpoint_numbers_and_leave_with_nothing_real(tmp_path):
    """Empty folders stand in for checkpoints Tune pruned (below the newest it kept), a killed
    launch's leftovers included; removing them touches no real checkpoint or other folder."""
    from sweeps.records import remove_stand_ins, stand_in_for_pruned_checkpoints

    trial = tmp_path / "supervised-ori-s0-ab_00000"
    for name in ("checkpoint_000003", "checkpoint_000004"):
        (trial / name).mkdir(parents=True)
        (trial / name / "state.pt").write_bytes(b"x")
    (trial / "data_parallel" / "checkpoint_2026-11-28_10-00-00.000000").mkdir(parents=True)  # Ray Train's: not Tune's
    (tmp_path / "untrained-ori-s0-ab_00001").mkdir()  # no checkpoint at all
    stand_in_for_pruned_checkpoints(tmp_path)
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [f"checkpoint_{i:06d}" for i in range(5)]
    stand_in_for_pruned_checkpoints(tmp_path)  # again, as after a second kill: the same, no error
    remove_stand_ins(tmp_path)
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == ["checkpoint_000003", "checkpoint_000004"]
    assert (trial / "data_parallel" / "checkpoint_2026-11-28_10-00-00.000000").is_dir()
