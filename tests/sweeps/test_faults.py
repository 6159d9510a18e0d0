"""Faults: a trial that fails once resumes from its checkpoint; a sweep interrupted with SIGINT resumes,
and so does the same sweep when its resumed driver is then killed with SIGKILL."""

from __future__ import annotations

import contextlib
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
from trainables.schema import trial_checkpoints

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


def _stop_driver(proc: subprocess.Popen, started: int | None, known: dict[int, int]) -> None:
    """SIGKILL a driver this test started in its own session (``started``: its start time, read at
    launch), the processes it started (Ray's keep its process group; trial workers die with their
    raylet) and ``known`` ones, all by pid; a group of unknown start is left alone."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    group = {
        pid: int(f[19])
        for pid, f in _processes().items()
        if started is not None and int(f[2]) == proc.pid and int(f[19]) >= started
    }
    for pid in _alive({**group, **known}):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
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


def _poll(proc: subprocess.Popen, storage, seconds: float, check):
    """Every 0.5 s while ``proc`` runs, ``check(client, child_runs)`` on the sweep's MLflow runs (experiment
    "cut"), until it returns something truthy (returned) or ``seconds`` pass (None)."""
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        client, children = _trial_runs(storage, "cut")
        if children and (got := check(client, children)):
            return got
    return None


def _trial_id(run) -> str:
    return run.data.tags["ray_trial_id"]


def test_fault__interrupted_then_killed_sweep_resumes_each_time_without_rerunning_a_finished_trial(storage, tmp_path):
    """One sweep of 3 trials run one at a time (A, B, C), stopped twice and resumed twice:

    1. SIGINT once A has finished: Tune saves its state, the driver exits 130 saying how to continue,
       no run is left RUNNING and the parent run is KILLED.
    2. ``--resume`` restores A as ended and continues B; kill -9 of that driver once B has finished and
       C has checkpoints, with Tune's experiment state older than both (Tune snapshots it every ~10 s:
       what a kill between snapshots leaves).
    3. ``--resume`` again must re-run neither A nor B and must continue C from its newest checkpoint on
       disk; every trial ends with one run and one loss per epoch."""
    epochs = 6
    cmd = [
        sys.executable,
        str(REPO / "sweeps/grid_patch_sizes.py"),
        *argv(storage, "--experiment", "cut", *TINY_GRID, "--max-concurrent", "1", epochs=epochs),
    ]
    env = {**os.environ, "SBL_CACHE_DIR": str(tmp_path / "cache")}
    experiment, stash = storage / "cut", tmp_path / "stale_state"
    # Output to files, not pipes: nobody reads a pipe while waiting, and Ray processes a killed driver
    # leaves behind would hold it open.
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second", "third")}
    popen = {"cwd": tmp_path, "env": env, "stderr": subprocess.STDOUT, "start_new_session": True}
    procs: list[tuple[subprocess.Popen, int | None]] = []

    def launch(args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=logs[log].open("w"), **popen)
        procs.append((proc, _start_time(proc.pid)))
        return proc

    ray_procs: dict[int, int] = {}
    try:
        # 1. SIGINT after A.
        first = launch(cmd, "first")
        a_runs = _poll(first, storage, 240, lambda _, runs: [r for r in runs if r.info.status == "FINISHED"])
        first.send_signal(signal.SIGINT)  # Tune saves its state and stops gracefully
        first.wait(timeout=120)
        out = logs["first"].read_text()
        assert a_runs, f"no trial finished before the interruption (exit {first.returncode}):\n{out[-3000:]}"
        assert first.returncode == 130 and "Traceback" not in out, out[-3000:]
        assert "trial(s) unfinished; continue with the same command and --resume" in out
        _, parents, before = runs(storage, "cut")
        assert all(r.info.status != "RUNNING" for r in before) and parents[0].info.status == "KILLED"
        [a] = [r for r in before if r.info.status == "FINISHED"]  # B must be left for the kill
        assert "\n1 of 3 trials finished" in out, out[-3000:]  # the interrupted trial is not counted

        # 2. --resume, then kill -9 once B has finished and C has checkpoints.
        second = launch([*cmd, "--resume"], "second")
        b_id = None

        def b_done_and_c_checkpointed(client, children):
            nonlocal b_id
            steps = {_trial_id(r): len(client.get_metric_history(r.info.run_id, "loss")) for r in children}
            running = [r for r in children if r.info.status == "RUNNING" and steps[_trial_id(r)] >= 1]
            states = _tune_state(experiment)
            if b_id is None and running and any(p.name.startswith("experiment_state") for p in states):
                stash.mkdir()  # the snapshot to restore later: from before B finished (maybe the first driver's)
                for path in states:
                    shutil.copy2(path, stash / path.name)
                b_id = _trial_id(running[0])
            done = [r for r in children if r.info.status == "FINISHED" and _trial_id(r) == b_id]
            c = [r for r in running if _trial_id(r) != b_id and steps[_trial_id(r)] >= 2]
            if done and c:
                ray_procs.update(_descendants(second.pid))
                second.kill()  # SIGKILL: no handler, no cleanup
                return done[0], c[0]
            return None

        killed = _poll(second, storage, 400, b_done_and_c_checkpointed)
        second.wait(timeout=60)
        out = logs["second"].read_text()
        assert killed, f"never reached B finished and C checkpointed:\n{out[-3000:]}"
        assert "1 of 3 trials already ended; 2 to run" in out, out[-3000:]
        counts = [int(k) for k in re.findall(r"\[(\d)/3 done,", out)]
        assert counts and min(counts) >= 1, counts  # progress counts on from the restored trial
        b, c = killed
        assert _trial_id(a) not in (_trial_id(b), _trial_id(c))
        worker_gone = time.time() + 60  # the trial worker dies with its raylet; then its checkpoints are final
        while (
            any(Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc") for p in _alive(ray_procs))
            and time.time() < worker_gone
        ):
            time.sleep(0.5)
        for path in _tune_state(experiment):  # Tune's last snapshot predates B's finish and C's checkpoints
            path.unlink()
        for path in stash.iterdir():
            shutil.copy2(path, experiment / path.name)
        newest = _newest_epoch(experiment, _trial_id(c))
        assert 2 <= newest < epochs, newest

        # 3. --resume again.
        orphans = _alive(ray_procs)  # Ray's agents outlive a killed driver by a minute or so
        third = launch([*cmd, "--resume"], "third")
        third.wait(timeout=600)
        out = logs["third"].read_text()
        progress = "\n".join(line for line in out.splitlines() if " seed 0 " in line or "stopped" in line)
        assert third.returncode == 0, out[-3000:]
        left = _alive(ray_procs)
        assert not left, f"Ray processes of the killed driver still running after the resume: {left}"
        if orphans:
            assert re.search(r"stopped \d+ Ray process\(es\) that the experiment's killed driver left running", out), (
                progress
            )

        def epochs_trained(run) -> list[int]:
            return [int(e) for e in re.findall(rf" {run.data.tags['corruption']} +seed 0  epoch (\d+) ", out)]

        for ended in (a, b):
            assert epochs_trained(ended) == [], (
                f"finished trial {ended.data.tags['corruption']} was re-run:\n{progress}"
            )
        assert epochs_trained(c) == list(range(newest + 1, epochs)), (
            f"{c.data.tags['corruption']} did not continue from epoch {newest}:\n{progress}"
        )
        client, parents, after = runs(storage, "cut")
        assert len(after) == 3 and all(r.info.status == "FINISHED" for r in after), [
            (r.data.tags, r.info.status) for r in after
        ]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        for ended in (a, b):  # their records are untouched
            assert next(r for r in after if r.info.run_id == ended.info.run_id).info.end_time == ended.info.end_time
        for run in after:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, epochs + 1))
    finally:
        for proc, started in procs:
            _stop_driver(proc, started, ray_procs)


def test_fault__a_snapshot_naming_a_pruned_checkpoint_resumes_from_the_newest_on_disk(storage, tmp_path):
    """Tune's last snapshot can name a checkpoint that its num_to_keep pruned since (a driver killed
    between snapshots, as a loaded CI machine once hit): Ray refused that trial ("does not exist on
    storage anymore") and the resumed sweep failed it. Made deterministic here: SIGINT mid-trial
    (Tune's state names the trial's newest checkpoint k), then the folder as a later, killed launch
    leaves it: checkpoints k + 1 and k + 2 on disk (the newest written last), k and older pruned.
    The resume continues from the newest state (not from scratch), and the trial's final checkpoint
    is the newest written, though Tune numbers the resumed trial's checkpoints from k + 1."""
    import torch

    epochs = 8
    config = {**yaml.safe_load(open(TINY_YAML)), "families": ["glo"], "grids": [1]}  # glo_1 is ori: one trial
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(config))
    flags = ["--experiment", "cut", "--config", str(tmp_path / "one.yaml"), "--set", "eval.eval_every=1"]
    cmd = [sys.executable, str(REPO / "sweeps/grid_patch_sizes.py"), *argv(storage, *flags, epochs=epochs)]
    popen = {
        "cwd": tmp_path,
        "env": {**os.environ, "SBL_CACHE_DIR": str(tmp_path / "cache")},
        "start_new_session": True,
    }
    procs: list[tuple[subprocess.Popen, int | None]] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}

    def launch(args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=logs[log].open("w"), stderr=subprocess.STDOUT, **popen)
        procs.append((proc, _start_time(proc.pid)))
        return proc

    try:
        first = launch(cmd, "first")

        def two_epochs(client, children):
            return [r for r in children if len(client.get_metric_history(r.info.run_id, "loss")) >= 2]

        assert _poll(first, storage, 240, two_epochs), logs["first"].read_text()[-3000:]
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130, logs["first"].read_text()[-3000:]
        [trial_dir] = {p.parent for p in storage.glob("cut/*/checkpoint_*")}
        kept = sorted(trial_dir.glob("checkpoint_*"))
        k = int(kept[-1].name.split("_")[1])
        resumes_after = torch.load(kept[-1] / "state.pt", weights_only=True)["epoch"]
        assert resumes_after < epochs
        for i, path in enumerate(kept[-2:] if len(kept) > 1 else kept * 2):  # k and its predecessor ...
            target = trial_dir / f"checkpoint_{k + 1 + i:06d}"
            shutil.copytree(path, target)  # ... written again as k + 1 and k + 2, the newest last
            time.sleep(0.05)
        for path in kept:
            shutil.rmtree(path)  # pruned: the snapshot's k among them

        second = launch([*cmd, "--resume"], "second")
        second.wait(timeout=600)
        out = logs["second"].read_text()
        assert second.returncode == 0 and "does not exist on storage" not in out, out[-3000:]
        trained = [int(e) for e in re.findall(r" ori +seed 0  epoch (\d+) ", out)]
        assert trained == list(range(resumes_after + 1, epochs)), out[-3000:]  # the last epoch's line is "finished"
        client, _, [run] = runs(storage, "cut")
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, epochs + 1))
        newest = trial_checkpoints(trial_dir)[-1]
        assert torch.load(newest, weights_only=True)["epoch"] == epochs  # the newest written is the final one
        assert not [p for p in trial_dir.glob("checkpoint_*") if not any(p.iterdir())]  # no stand-in left
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"backbone.pt"}
    finally:
        for proc, started in procs:
            _stop_driver(proc, started, {})
