"""ASHA for ``tune_hparams`` that judges trials on the reports they make now, not on replayed ones."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from trainables.tune_adapter import REPLAYED


class LiveASHA(ASHAScheduler):
    """Ray's ASHA, passing over reports marked ``REPLAYED`` (``tune_adapter.replay``): those repeat
    epochs trained before a resume, or a finished trial's final result. Tune does not keep ASHA's
    rungs across ``--resume``, so a replayed final result (at training_iteration 1) would fill the
    first rung with a final accuracy, and a replayed epoch could stop a trial on an old value."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(REPLAYED):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result.get(REPLAYED):
            self._trial_info.pop(trial.trial_id, None)  # what ASHA's own does besides recording the result
            return
        super().on_trial_complete(tune_controller, trial, result)
