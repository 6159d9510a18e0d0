"""What a launch leaves in its experiment folder, and what the next launch checks against it.

* ``sweep_record.json``: the MLflow store the sweep writes to. A ``--resume`` into another store
  would find no parent run there (and create an empty store), so it is refused naming both.
* ``driver.json``: the driver's pid and the local Ray processes it started, with their start
  times. A driver killed with SIGKILL runs no cleanup, and Ray's agents outlive it for a minute or
  more; the next launch stops exactly those recorded processes (pid and start time must both
  match: never a process by name), and refuses to resume while the recorded driver still runs.
* trust: ``--resume`` unpickles Tune's state (``tuner.pkl``, ``experiment_state-*.json``, searcher
  state), so a file someone else could write is code they could run. The storage folder, the
  experiment folder and the files in it must be the user's own and writable by nobody else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import time
from pathlib import Path

from sweeps.options import SweepError

RECORD_FILE = "sweep_record.json"
DRIVER_FILE = "driver.json"


def save_record(experiment_path: Path, mlflow_uri: str) -> None:
    """Record the MLflow store of a new sweep (read back by ``check_store``) and that its Tune
    loggers are the explicit ones (``explicit_loggers``)."""
    record = {"mlflow_uri": mlflow_uri, "tune_loggers": "explicit"}
    _write_json(experiment_path / RECORD_FILE, record)


def save_trial_total(experiment_path: Path, total: int) -> None:
    """Add to a new sweep's record how many trials it runs (its grid times ``num_samples``): on
    ``--resume`` Tune restores its searcher, and the driver still counts the trials not made yet."""
    path = experiment_path / RECORD_FILE
    _write_json(path, {**json.loads(path.read_text()), "trials": total})


def trial_total(experiment_path: Path) -> int | None:
    """``save_trial_total``'s count; None for a sweep recorded before it (or no record)."""
    try:
        return int(json.loads((experiment_path / RECORD_FILE).read_text())["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, record: dict) -> None:
    write_whole(path, json.dumps(record, indent=1).encode())


def write_whole(path: Path, data: bytes) -> None:
    """Write whole or not at all: a driver killed mid-write leaves the previous file, not a torn one."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def explicit_loggers(experiment_path: Path) -> bool:
    """Whether the sweep was launched with explicit JSON/CSV loggers and no TensorBoard logger.
    Tune keeps a sweep's callbacks in its saved state: an older sweep resumed without Tune's
    automatic loggers would stop writing its trials' ``result.json``."""
    try:
        return json.loads((experiment_path / RECORD_FILE).read_text()).get("tune_loggers") == "explicit"
    except (OSError, ValueError):
        return False


def check_store(experiment_path: Path, mlflow_uri: str) -> None:
    """--resume writes to the store the sweep was launched with; sweeps from before this record
    are checked in ``sweeps.tracking.check_parent_run`` instead."""
    path = experiment_path / RECORD_FILE
    if not path.is_file():
        return
    recorded = json.loads(path.read_text())["mlflow_uri"]
    if _same_uri(recorded, mlflow_uri):
        return
    raise SweepError(
        f"--resume: --mlflow-uri {mlflow_uri!r}, but the sweep records its runs in {recorded!r} ({path}); "
        f"valid: --mlflow-uri {recorded}"
    )


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def check_trusted(storage: Path, experiment_path: Path) -> None:
    """Refuse to unpickle Tune's state from a folder or file that is not the user's own or that
    group or others may write (a crafted ``tuner.pkl`` runs code at ``Tuner.restore``). Trial
    folders and their files count too (an errored trial's ``error.pkl`` is unpickled); checkpoints
    below them load with ``weights_only``."""
    top = sorted(experiment_path.iterdir())
    trials = [p for p in top if p.is_dir()]
    paths = [
        storage,
        experiment_path,
        *[p for p in top if not p.is_dir()],
        *trials,
        *[f for t in trials for f in sorted(t.iterdir()) if not f.is_dir()],
    ]
    uid = os.getuid()
    for path in paths:
        st = path.stat()  # follows a link: its target is what gets read
        if st.st_uid != uid:
            raise SweepError(
                f"--resume: {path} belongs to uid {st.st_uid}, not to you (uid {uid}); --resume unpickles Tune's "
                f"state, so it reads only your own files; valid: a copy of the experiment in a folder you own"
            )
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SweepError(
                f"--resume: {path} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} "
                f"({stat.filemode(st.st_mode)}); --resume unpickles Tune's state, so anyone who can write it "
                f"can run code as you; valid: chmod go-w {path}, after checking its contents"
            )


def private_umask() -> None:
    """Create every file and folder of the sweep without group or other write (the storage folder,
    Tune's state, checkpoints: Ray's processes inherit it), so ``check_trusted`` accepts them."""
    os.umask(os.umask(0) | 0o022)


def record_driver(experiment_path: Path) -> None:
    """Record this driver and the local Ray processes it started (call right after ``ray.init``)."""
    me = os.getpid()
    record = {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": me,
        "start": _start_time(me),
        "ray": {str(pid): start for pid, start in _descendants(me).items()},
    }
    experiment_path.mkdir(parents=True, exist_ok=True)
    _write_json(experiment_path / DRIVER_FILE, record)


def forget_driver(experiment_path: Path) -> None:
    """The driver ends normally: its Ray processes end with it."""
    (experiment_path / DRIVER_FILE).unlink(missing_ok=True)


def check_driver_gone(experiment_path: Path) -> None:
    """Refuse to resume an experiment whose recorded driver is still running on this machine."""
    record = _driver_record(experiment_path)
    if record and _alive(record["pid"], record["start"]):
        raise SweepError(
            f"--resume: the experiment {str(experiment_path)!r} is still being run by pid {record['pid']}; "
            f"valid: wait for it, or stop it (Ctrl+C, or kill -INT {record['pid']}) and resume"
        )


def stop_stale_ray(experiment_path: Path, grace_s: float = 5.0) -> list[int]:
    """Stop the Ray processes a dead driver of this experiment left behind (SIGTERM, then SIGKILL
    after ``grace_s``); returns their pids. Only recorded pids whose start time still matches."""
    record = _driver_record(experiment_path)
    if not record or _alive(record["pid"], record["start"]):
        return []
    left = [int(pid) for pid, start in record["ray"].items() if _alive(int(pid), start)]
    for pid in left:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(int(p), record["ray"][str(p)]) for p in left):
        time.sleep(0.1)
    for pid in left:
        if _alive(pid, record["ray"][str(pid)]):
            _signal(pid, signal.SIGKILL)
    forget_driver(experiment_path)
    return left


def _driver_record(experiment_path: Path) -> dict | None:
    """The recorded driver if it ran on this machine since its last boot (else its pids mean nothing here)."""
    try:
        record = json.loads((experiment_path / DRIVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("host") == socket.gethostname() and record.get("boot") == _boot_id() else None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and _start_time(pid) == start


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), which tells it from a later one with its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process under ``pid``."""
    children: dict[int, list[int]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(path.read_text().rpartition(")")[2].split()[1]), []).append(int(path.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if (start := _start_time(child)) is not None:
                found[child] = start
            todo.append(child)
    return found


def stand_in_for_pruned_checkpoints(experiment_path: Path) -> None:
    """Empty folders where Tune pruned a trial's older checkpoints (``num_to_keep``).

    A killed driver leaves Tune's last experiment snapshot (taken every ~10 s), which can name a
    checkpoint pruned since; Ray then refuses that trial outright ("does not exist on storage
    anymore") and the sweep fails it, though newer checkpoints lie beside it. With a folder in its
    place the trial starts, and ``trainables.tune_adapter._resume_state`` loads its newest
    checkpoint on disk (an empty folder holds no state file, so it is never a candidate).
    ``remove_stand_ins`` takes them away once the sweep has run, and any a killed launch left.
    """
    remove_stand_ins(experiment_path)
    for trial_dir in (p for p in experiment_path.iterdir() if p.is_dir()):
        indices = [int(m.group(1)) for p in trial_dir.glob("checkpoint_*") if (m := _TUNE_CHECKPOINT.fullmatch(p.name))]
        for i in range(max(indices, default=0)):
            (trial_dir / f"checkpoint_{i:06d}").mkdir(exist_ok=True)


def remove_stand_ins(experiment_path: Path) -> None:
    """Remove every empty Tune checkpoint folder (a stand-in: Tune writes its files before it
    registers a checkpoint)."""
    for folder in experiment_path.glob("*/checkpoint_*"):
        if _TUNE_CHECKPOINT.fullmatch(folder.name):
            with contextlib.suppress(OSError):  # not empty: a real checkpoint
                folder.rmdir()


_TUNE_CHECKPOINT = re.compile(r"checkpoint_(\d{6})")
