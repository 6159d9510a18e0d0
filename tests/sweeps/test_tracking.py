"""sweeps/tracking.py: what a restored trial writer tags new runs with, and that a FINISHED run is final."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import pandas as pd
from mlflow.tracking import MlflowClient

from sweeps.tracking import MLflowTrialWriter, _is_metric, code_version, level_curves, per_class
from tests.conftest import REPO


def test_trial_writer__a_resumed_sweep_tags_new_runs_with_the_resuming_code(tmp_path):
    writer = MLflowTrialWriter(f"sqlite:///{tmp_path / 'mlflow.db'}", parent_run_id="p")
    writer._version = {"git_sha": "the first launch's", "git_dirty": "False"}
    restored = pickle.loads(pickle.dumps(writer))  # what Tuner.restore hands back
    restored.setup(total_num_samples=1)
    assert restored._version == code_version() and restored._version["git_sha"] != "the first launch's"


class _Trial:
    """What the writer reads of a Tune trial."""

    def __init__(self, trial_id: str, last_result: dict) -> None:
        cell = {"method": "supervised", "data.corruption": "ori", "data.dataset": "digits", "system.seed": 0}
        self.trial_id, self.config, self.last_result = trial_id, {"sweep.cell": cell}, last_result


def test_trial_writer__a_run_recorded_finished_is_never_reopened_or_rewritten(tmp_path):
    """After a kill -9, Tune's stale state can hand back a trial MLflow already recorded FINISHED."""
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import open_parent_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = open_parent_run(uri, "exp", tmp_path / "art", tmp_path / "parent_id", {})
    final = {"epoch": 2, "loss": 1.0, "knn_acc": 50.0, "done": True}
    first = MLflowTrialWriter(uri, parent)
    trial = _Trial("abc_00000", final)
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, {"epoch": 1, "loss": 2.0})
    first.on_trial_complete(0, [], trial)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.ray_trial_id = 'abc_00000'")
    assert run.info.status == "FINISHED"

    resumed = MLflowTrialWriter(uri, parent)  # the next launch, handed the same trial again
    resumed.setup()
    again = _Trial("abc_00000", {**final, "knn_acc": 99.0})
    resumed.on_trial_start(0, [], again)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"  # not reopened as RUNNING
    resumed.on_trial_result(0, [], again, {"epoch": 1, "loss": 9.0})
    resumed.on_trial_complete(0, [], again)
    after = client.get_run(run.info.run_id)
    assert after.info.status == "FINISHED" and after.info.end_time == run.info.end_time
    path = client.download_artifacts(run.info.run_id, "final_metrics.json", str(tmp_path / "dl"))
    assert json.loads(open(path).read())["knn_acc"] == 50.0
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [2.0]


def test_trial_writer__a_resumed_trial_logs_the_replayed_epochs_it_lacks_and_tags_from_live_ones(tmp_path):
    """A resumed data-parallel trial replays its checkpoint's epochs (tune_adapter.replay), on another machine."""
    from sweeps.tracking import open_parent_run
    from trainables.tune_adapter import REPLAYED

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = open_parent_run(uri, "exp", tmp_path / "art", tmp_path / "parent_id", {})
    trial = _Trial("abc_00000", {})
    first = MLflowTrialWriter(uri, parent)
    first.on_trial_start(0, [], trial)
    first.on_trial_result(0, [], trial, {"epoch": 1, "loss": 2.0, "memory_format": "channels_last"})
    resumed = MLflowTrialWriter(uri, parent)  # the next launch: epoch 2 had been trained, never recorded
    resumed.setup()
    resumed.on_trial_start(0, [], trial)
    for epoch, loss in ((1, 2.0), (2, 1.5)):
        resumed.on_trial_result(
            0, [], trial, {"epoch": epoch, "loss": loss, "memory_format": "channels_last", REPLAYED: True}
        )
    resumed.on_trial_result(0, [], trial, {"epoch": 3, "loss": 1.0, "memory_format": "contiguous"})
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.ray_trial_id = 'abc_00000'")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (1, 2.0),
        (2, 1.5),
        (3, 1.0),
    ]
    assert run.data.tags["memory_format"] == "contiguous"  # this launch's machine, not the replayed launch's


def test_per_class__final_values_grouped_by_metric_and_class_and_never_logged_as_metrics():
    result = {
        "knn_acc": 50.0,
        "intra_distance": 1.5,
        "intra_distance/0": 1.0,
        "intra_distance/1": 2.0,
        "classwise_uniformity/1": -0.5,
        "inter_distance/0": 3.0,
    }
    assert per_class(result) == {
        "intra_distance": {"0": 1.0, "1": 2.0},
        "classwise_uniformity": {"1": -0.5},
        "inter_distance": {"0": 3.0},
    }
    assert per_class({"knn_acc": 50.0}) == {}
    assert [k for k in result if _is_metric(k)] == ["knn_acc", "intra_distance"]


def test_level_curves__accuracy_against_integer_levels_per_arm_and_family():
    accuracy = pd.DataFrame(
        {
            "arm": ["supervised", "supervised", "supervised", "supervised@20", "untrained", "supervised"],
            "corruption": ["ori", "glo_2", "glo_8", "loc_4", "glo_2", "gam_0.5"],
            "mean": [90.0, 70.0, 50.0, 40.0, float("nan"), 80.0],
        }
    )
    got = sorted((m.key, m.step, m.value) for m in level_curves(accuracy))
    assert got == [
        ("level_curve/supervised/global", 2, 70.0),
        ("level_curve/supervised/global", 8, 50.0),
        ("level_curve/supervised_at20/local", 4, 40.0),
    ]  # no ori, no NaN, no fractional gamma


def test_ensure_store__processes_opening_one_new_store_at_once_all_get_it(tmp_path):
    """MLflow's migration run by 3 processes at the same moment fails in 2 and can leave the store
    broken (measured without the lock); under ``ensure_store`` all 3 succeed and the store works."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 5  # every process has imported mlflow by then
    code = (
        "import sys, time\nfrom sweeps.store import ensure_store\n"
        f"ready = time.time() < {start}\nwhile time.time() < {start}: time.sleep(0.001)\n"
        "ensure_store(sys.argv[1])\nprint('ok' if ready else 'late')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, uri], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    # "ok", not "late": each was ready before the common start, so all three really raced
    assert all(p.returncode == 0 and out.strip() == "ok" for p, (out, _) in zip(procs, outs, strict=True)), outs
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("after"))
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
