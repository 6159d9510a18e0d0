"""Faults: a trial that fails once resumes from its checkpoint; an interrupted sweep resumes, and so
does one whose driver was killed with SIGKILL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.conftest import REPO
from tests.sweeps.conftest import TINY_YAML, argv, final_metrics, runs
from trainables import tune_adapter

pytestmark = pytest.mark.slow
TINY_GRID = ["--config", TINY_YAML, "--set", "eval.eval_every=1"]


def test_fault__failed_trial_resumes_from_checkpoint_with_identical_metrics(storage, tmp_path, ray_shutdown):
    config = {**yaml.safe_load(open(TINY_YAML)), "families": ["glo"]}  # ori and glo_4: both cores, one wave
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    two_trials = ["--config", str(tmp_path / "two.yaml"), "--set", "eval.eval_every=1"]
    assert main(GRID, argv(storage, "--experiment", "clean", *two_trials, epochs=3)) == 0
    assert (
        main(
            GRID, argv(storage, "--experiment", "faulty", *two_trials, "--set", "sweep.fail_once_at_epoch=2", epochs=3)
        )
        == 0
    )
    client, _, clean = runs(storage, "clean")
    _, _, faulty = runs(storage, "faulty")
    assert len(faulty) == len(clean) == 2  # one run per trial despite the retry
    by_corruption = {r.data.tags["corruption"]: r for r in clean}
    for run in faulty:
        assert run.info.status == "FINISHED"
        ref = by_corruption[run.data.tags["corruption"]]
        got, want = final_metrics(client, run, storage / "f"), final_metrics(client, ref, storage / "c")
        for key in ("knn_acc", "uniformity", "alignment", "feature_distance"):
            assert got[key] == want[key], key
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [
            m.value for m in client.get_metric_history(ref.info.run_id, "loss")
        ]


def test_fault__interrupted_sweep_resumes_without_rerunning_finished_trials(storage, tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "sweeps/grid_patch_sizes.py"),
        *argv(storage, "--experiment", "cut", *TINY_GRID, "--max-concurrent", "1", epochs=3),
    ]
    env = {**os.environ, "SBL_CACHE_DIR": str(tmp_path / "cache")}
    # Output to a file, not a pipe nobody reads while waiting: a full pipe would stall the sweep.
    log = tmp_path / "first.log"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    finished = []
    while time.time() < deadline and not finished and proc.poll() is None:
        time.sleep(0.5)
        if (storage / "mlflow.db").exists():
            try:
                _, _, children = runs(storage, "cut")
                finished = [r for r in children if r.info.status == "FINISHED"]
            except Exception:  # the store is still being created
                pass
    proc.send_signal(signal.SIGINT)  # Tune saves its state and stops gracefully
    proc.wait(timeout=120)
    out = log.read_text()
    assert finished, f"no trial finished before the interruption (exit {proc.returncode}):\n{out[-3000:]}"
    assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
    assert "trial(s) unfinished; continue with the same command and --resume" in out
    _, parents, before = runs(storage, "cut")
    assert all(r.info.status != "RUNNING" for r in before) and parents[0].info.status == "KILLED"
    done_before = {r.info.run_id: r.info.end_time for r in before if r.info.status == "FINISHED"}
    assert len(done_before) < 3, "the sweep finished before it could be interrupted"
    assert f"\n{len(done_before)} of 3 trials finished" in out, out[-3000:]  # the interrupted trial is not counted

    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{len(done_before)} of 3 trials already ended; {3 - len(done_before)} to run" in resumed.stdout
    counts = [int(k) for k in re.findall(r"\[(\d)/3 done,", resumed.stdout)]
    assert counts and min(counts) >= len(done_before), counts  # progress counts on from the restored trials
    client, parents, after = runs(storage, "cut")
    assert len(after) == 3 and all(r.info.status == "FINISHED" for r in after)
    assert parents[0].info.status == "FINISHED"
    for run in after:
        if run.info.run_id in done_before:  # finished trials were not re-run
            assert run.info.end_time == done_before[run.info.run_id]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ... (field 22 of stat is [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), to tell it from a later one with its pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _processes() -> dict[int, list[str]]:
    found = {}
    for path in Path("/proc").glob("[0-9]*"):
        if (fields := _stat(int(path.name))) is not None:
            found[int(path.name)] = fields
    return found


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process under ``pid`` (Ray's local processes under a driver)."""
    procs = _processes()
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, fields in procs.items():
            if int(fields[1]) == p:
                found[child] = int(fields[19])
                todo.append(child)
    return found


def _alive(procs: dict[int, int]) -> list[int]:
    return [pid for pid, start in procs.items() if _start_time(pid) == start]


def _stop_driver(proc: subprocess.Popen, known: dict[int, int]) -> None:
    """SIGKILL a driver this test started in its own session, the processes it started (Ray's keep its
    process group; trial workers die with their raylet) and ``known`` ones, all by pid."""
    started = _start_time(proc.pid)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    group = {
        pid: int(f[19])
        for pid, f in _processes().items()
        if int(f[2]) == proc.pid and (started is None or int(f[19]) >= started)
    }
    for pid in _alive({**group, **known}):
        os.kill(pid, signal.SIGKILL)


def _trial_runs(storage, experiment):
    try:
        client, _, children = runs(storage, experiment)
        return client, children
    except Exception:  # the store or experiment is still being created
        return None, []


def _newest_epoch(experiment_dir, trial_id) -> int:
    """The newest epoch a trial has a loadable checkpoint of, in any of its folders."""
    import torch

    epochs = [0]
    for path in tune_adapter.checkpoint_files(experiment_dir, trial_id):
        try:
            epochs.append(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # a checkpoint torn by the kill
            pass
    return max(epochs)


TUNE_STATE = ("experiment_state-*.json", "basic-variant-state-*.json", "searcher-state-*.pkl")


def _tune_state(experiment_dir) -> list[Path]:
    return [p for pattern in TUNE_STATE for p in experiment_dir.glob(pattern)]


def test_fault__killed_driver_resumes_without_rerunning_a_finished_trial_and_from_the_newest_checkpoint(
    storage, tmp_path
):
    """kill -9 of the driver while trial A is FINISHED in MLflow and trial B has checkpoints, with Tune's
    experiment state older than both (Tune snapshots it every ~10 s: what a kill between snapshots leaves).
    --resume must not re-run A and must continue B from its newest checkpoint on disk."""
    epochs = 6
    cmd = [
        sys.executable,
        str(REPO / "sweeps/grid_patch_sizes.py"),
        *argv(storage, "--experiment", "kill9", *TINY_GRID, "--max-concurrent", "1", epochs=epochs),
    ]
    env = {**os.environ, "SBL_CACHE_DIR": str(tmp_path / "cache")}
    experiment, stash = storage / "kill9", tmp_path / "stale_state"
    # Output to files, not pipes: Ray processes a killed driver leaves behind would hold a pipe open.
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "resumed")}
    popen = {"cwd": tmp_path, "env": env, "stderr": subprocess.STDOUT, "start_new_session": True}
    proc = subprocess.Popen(cmd, stdout=logs["first"].open("w"), **popen)
    ray_procs: dict[int, int] = {}
    resumed = None
    try:
        first = killed = None
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and killed is None:
            time.sleep(0.5)
            client, children = _trial_runs(storage, "kill9")
            steps = {
                r.data.tags["ray_trial_id"]: len(client.get_metric_history(r.info.run_id, "loss")) for r in children
            }
            running = [r for r in children if r.info.status == "RUNNING" and steps[r.data.tags["ray_trial_id"]] >= 1]
            states = _tune_state(experiment)
            if first is None and running and any(p.name.startswith("experiment_state") for p in states):
                stash.mkdir()  # the snapshot to restore later: taken while trial A still runs
                for path in states:
                    shutil.copy2(path, stash / path.name)
                first = running[0].data.tags["ray_trial_id"]
            done = [r for r in children if r.info.status == "FINISHED" and r.data.tags["ray_trial_id"] == first]
            second = [
                r for r in running if r.data.tags["ray_trial_id"] != first and steps[r.data.tags["ray_trial_id"]] >= 2
            ]
            if done and second:
                ray_procs = _descendants(proc.pid)
                proc.kill()  # SIGKILL: no handler, no cleanup
                killed = (done[0], second[0])
        proc.wait(timeout=60)
        assert killed, f"never reached one finished and one checkpointed trial:\n{logs['first'].read_text()[-3000:]}"
        finished, interrupted = killed
        worker_gone = time.time() + 60  # the trial worker dies with its raylet; then its checkpoints are final
        while (
            any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc") for p in _alive(ray_procs))
            and time.time() < worker_gone
        ):
            time.sleep(0.5)
        for path in _tune_state(experiment):  # Tune's last snapshot predates A's finish and B's checkpoints
            path.unlink()
        for path in stash.iterdir():
            shutil.copy2(path, experiment / path.name)
        b_id = interrupted.data.tags["ray_trial_id"]
        newest = _newest_epoch(experiment, b_id)
        assert 2 <= newest < epochs, newest

        orphans = _alive(ray_procs)  # Ray's agents outlive a killed driver by a minute or so
        resumed = subprocess.Popen([*cmd, "--resume"], stdout=logs["resumed"].open("w"), **popen)
        resumed.wait(timeout=600)
        out = logs["resumed"].read_text()
        progress = "\n".join(line for line in out.splitlines() if " seed 0 " in line or "stopped" in line)
        assert resumed.returncode == 0, out[-3000:]
        left = _alive(ray_procs)
        assert not left, f"Ray processes of the killed driver still running after the resume: {left}"
        if orphans:
            assert re.search(r"stopped \d+ Ray process\(es\) that the experiment's killed driver left running", out), (
                progress
            )

        def epochs_trained(corruption: str) -> list[int]:
            return [int(e) for e in re.findall(rf" {corruption} +seed 0  epoch (\d+) ", out)]

        a, b = finished.data.tags["corruption"], interrupted.data.tags["corruption"]
        assert epochs_trained(a) == [], f"finished trial {a} was re-run:\n{progress}"
        assert epochs_trained(b) == list(range(newest + 1, epochs)), (
            f"{b} did not continue from epoch {newest}:\n{progress}"
        )
        client, parents, after = runs(storage, "kill9")
        assert len(after) == 3 and all(r.info.status == "FINISHED" for r in after), [
            (r.data.tags, r.info.status) for r in after
        ]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        again = next(r for r in after if r.info.run_id == finished.info.run_id)
        assert again.info.end_time == finished.info.end_time  # its record is untouched
        for run in after:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, epochs + 1))
    finally:
        _stop_driver(proc, ray_procs)
        if resumed is not None:
            _stop_driver(resumed, {})
