"""``<trial>/progress.csv``: one row per Tune result, whose columns stay the file's own across resumes."""

from __future__ import annotations

import csv
from pathlib import Path

from ray.tune.logger import CSVLoggerCallback

PROGRESS_FILE = "progress.csv"


class ProgressCSV(CSVLoggerCallback):
    """Ray's CSV logger (Tune's flattened result, config aside; the file restored from storage
    with a resumed trial's checkpoint), but a resumed trial's rows keep the file's header.

    Ray's takes a resumed trial's columns from its first new result without writing them: when
    that result's keys differ from the first launch's (a replayed epoch adds ``replayed``, an epoch
    without evaluation lacks its keys), every later row is shifted against the header, and pandas
    cannot read the file. Keys the header lacks are left out, as Ray leaves out keys its first
    result lacked. (Ray 2.60's ``_setup_trial`` and its per-trial state; pinned in pyproject.toml.)
    """

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_files:
            self._setup_trial(trial)  # restores the file from storage, opens it to append
            if self._trial_continue[trial]:
                with open(Path(trial.local_path) / PROGRESS_FILE, newline="") as file:
                    header = next(csv.reader(file), None)
                if header:
                    self._trial_csv[trial] = csv.DictWriter(self._trial_files[trial], header)
        super().log_trial_result(iteration, trial, result)
