"""ASHA for ``tune_hparams``: judges trials on the reports they make now, and keeps its rungs for ``--resume``."""

from __future__ import annotations

import pickle
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from sweeps import records
from trainables.tune_adapter import REPLAYED

STATE_FILE = "asha_state.pkl"  # in the experiment folder


class LiveASHA(ASHAScheduler):
    """Ray's ASHA with two changes for resumed searches.

    * Reports marked ``REPLAYED`` (``tune_adapter.replay``: epochs trained before a resume, or a
      finished trial's final result) are passed over: a replayed final result (at
      training_iteration 1) would fill the first rung with a final accuracy, and a replayed epoch
      could stop a trial on an old value.
    * With ``keep_rungs``, the rungs are kept in the experiment folder (``STATE_FILE``) after every
      decision and read back when the restored scheduler sees its first trial: Tune restores ASHA
      as it was when the sweep started, so after ``--resume`` it would judge with empty rungs and
      stop weak trials far later. The folder is the trial's (``trial.storage``), so a moved or
      copied experiment uses its own file, which ``--resume`` has checked is the user's own.
    """

    keep_rungs = False  # class defaults: a scheduler pickled by an older version lacks these attributes
    _state: Path | None = None  # the rungs' file, once the first trial has said where the experiment is
    _saved: dict[str, int] | None = None  # trial id -> bracket, once read back

    def __init__(self, keep_rungs: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.keep_rungs = keep_rungs

    def on_trial_add(self, tune_controller, trial) -> None:
        if self._saved is None:
            self._state = Path(trial.storage.experiment_fs_path) / STATE_FILE if self.keep_rungs else None
            self._saved = self._load()
        if trial.trial_id in self._saved:
            self._trial_info[trial.trial_id] = self._brackets[self._saved[trial.trial_id]]
        else:
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(REPLAYED):
            return TrialScheduler.CONTINUE
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result.get(REPLAYED):
            self._trial_info.pop(trial.trial_id, None)  # what ASHA's own does besides recording the result
            return
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def _save(self) -> None:
        if self._state is None:
            return
        trials = {tid: self._brackets.index(bracket) for tid, bracket in self._trial_info.items()}
        records.write_whole(
            self._state, pickle.dumps({"brackets": self._brackets, "trials": trials, "stopped": self._num_stopped})
        )

    def _load(self) -> dict[str, int]:
        """The kept rungs (into this scheduler) and each kept trial's bracket; {} if none are kept."""
        if self._state is None or not self._state.is_file():
            return {}
        state = pickle.loads(self._state.read_bytes())
        self._brackets, self._num_stopped = state["brackets"], state["stopped"]
        return state["trials"]
