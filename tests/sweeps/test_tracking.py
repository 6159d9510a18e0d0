"""sweeps/tracking.py: what a restored trial writer tags new runs with."""

from __future__ import annotations

import pickle

from sweeps.tracking import MLflowTrialWriter, code_version


def test_trial_writer__a_resumed_sweep_tags_new_runs_with_the_resuming_code(tmp_path):
    writer = MLflowTrialWriter(f"sqlite:///{tmp_path / 'mlflow.db'}", parent_run_id="p")
    writer._version = {"git_sha": "the first launch's", "git_dirty": "False"}
    restored = pickle.loads(pickle.dumps(writer))  # what Tuner.restore hands back
    restored.setup(total_num_samples=1)
    assert restored._version == code_version() and restored._version["git_sha"] != "the first launch's"
