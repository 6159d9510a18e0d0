"""Faults: a trial that fails once resumes from its checkpoint; an interrupted sweep resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.conftest import REPO
from tests.sweeps.conftest import TINY_YAML, argv, final_metrics, runs

pytestmark = pytest.mark.slow
TINY_GRID = ["--config", TINY_YAML, "--set", "eval.eval_every=1"]


def test_fault__failed_trial_resumes_from_checkpoint_with_identical_metrics(storage, tmp_path, ray_shutdown):
    config = {**yaml.safe_load(open(TINY_YAML)), "families": ["glo"]}  # ori and glo_4: both cores, one wave
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config))
    two_trials = ["--config", str(tmp_path / "two.yaml"), "--set", "eval.eval_every=1"]
    assert main(GRID, argv(storage, "--experiment", "clean", *two_trials, epochs=3)) == 0
    assert main(GRID, argv(storage, "--experiment", "faulty", *two_trials, "--set", "sweep.fail_once_at_epoch=2", epochs=3)) == 0
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
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == \
            [m.value for m in client.get_metric_history(ref.info.run_id, "loss")]


def test_fault__interrupted_sweep_resumes_without_rerunning_finished_trials(storage, tmp_path):
    cmd = [sys.executable, str(REPO / "sweeps/grid_patch_sizes.py"), *argv(storage, "--experiment", "cut", *TINY_GRID,
           "--max-concurrent", "1", epochs=3)]
    env = {**os.environ, "SBL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    finished = []
    while time.time() < deadline and not finished:
        time.sleep(2)
        if (storage / "mlflow.db").exists():
            try:
                _, _, children = runs(storage, "cut")
                finished = [r for r in children if r.info.status == "FINISHED"]
            except Exception:  # the store is still being created
                pass
    proc.send_signal(signal.SIGINT)  # Tune saves its state and stops gracefully
    out, _ = proc.communicate(timeout=120)
    assert finished, "no trial finished before the interruption"
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
    assert f"[{len(done_before)}/3 done," in resumed.stdout  # progress counts on from the restored trials
    client, parents, after = runs(storage, "cut")
    assert len(after) == 3 and all(r.info.status == "FINISHED" for r in after)
    assert parents[0].info.status == "FINISHED"
    for run in after:
        if run.info.run_id in done_before:  # finished trials were not re-run
            assert run.info.end_time == done_before[run.info.run_id]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
