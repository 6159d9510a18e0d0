"""sweeps/progress_csv.py: a resumed trial's rows stay under the file's header."""

from __future__ import annotations

import pandas as pd
from ray.tune.logger import CSVLoggerCallback

from sweeps.progress_csv import PROGRESS_FILE, ProgressCSV


class _Trial:
    """What a CSV logger reads of a Tune trial."""

    def __init__(self, path) -> None:
        self.local_path, self.trial_id, self.checkpoint = str(path), "t", None  # nothing to restore from storage

    def init_local_path(self) -> None:
        pass


def test_progress_csv__a_resumed_trial_keeps_the_columns_of_the_file(tmp_path):
    first, resumed = ProgressCSV(), ProgressCSV()  # two launches of the sweep
    trial = _Trial(tmp_path)
    first.log_trial_result(1, trial, {"epoch": 1, "loss": 2.0, "knn": {"acc": 40.0}, "config": {"a": 1}})
    first.log_trial_result(2, trial, {"epoch": 2, "loss": 1.5, "knn": {"acc": 45.0}})
    first.log_trial_end(trial)
    resumed.log_trial_result(1, trial, {"epoch": 2, "replayed": True, "loss": 1.5, "knn": {"acc": 45.0}})
    resumed.log_trial_result(2, trial, {"epoch": 3, "loss": 1.0})  # no evaluation this epoch
    resumed.log_trial_end(trial)
    df = pd.read_csv(tmp_path / PROGRESS_FILE)
    assert list(df.columns) == ["epoch", "loss", "knn/acc"]
    assert df["epoch"].tolist() == [1, 2, 2, 3] and df["loss"].tolist() == [2.0, 1.5, 1.5, 1.0]
    assert df["knn/acc"].tolist()[:3] == [40.0, 45.0, 45.0] and pd.isna(df["knn/acc"].iloc[3])


def test_progress_csv__tune_counts_it_as_its_csv_logger():
    assert isinstance(ProgressCSV(), CSVLoggerCallback)  # Tune then adds no second CSV logger
