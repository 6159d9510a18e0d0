"""sweeps/live_asha.py: ASHA passes over replayed reports and judges live ones as Ray's ASHA does."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from sweeps.live_asha import LiveASHA
from trainables.tune_adapter import REPLAYED


def _asha(*trials, state_path=None):
    asha = LiveASHA(
        state_path=state_path, time_attr="training_iteration", metric="loss", mode="min", max_t=4, grace_period=1
    )
    for trial in trials:
        asha.on_trial_add(None, trial)
    return asha


def test_live_asha__a_replayed_report_neither_stops_a_trial_nor_fills_a_rung():
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    asha = _asha(a, b)
    final = {"training_iteration": 1, "loss": 0.1, "done": True, REPLAYED: True}  # a finished trial, replayed
    asha.on_trial_complete(None, a, final)
    assert "a" not in asha._trial_info  # released as ASHA's own would
    assert asha.on_trial_result(None, b, {"training_iteration": 1, "loss": 2.0}) == TrialScheduler.CONTINUE
    # At max_t Ray's ASHA stops any trial; a replayed report there is passed over.
    assert (
        asha.on_trial_result(None, b, {"training_iteration": 4, "loss": 2.0, REPLAYED: True}) == TrialScheduler.CONTINUE
    )
    assert asha.on_trial_result(None, b, {"training_iteration": 4, "loss": 2.0}) == TrialScheduler.STOP


def test_live_asha__live_reports_are_judged_at_the_rungs():
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    asha = _asha(a, b)
    assert asha.on_trial_result(None, a, {"training_iteration": 1, "loss": 0.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.STOP  # worse


def test_live_asha__a_resumed_search_judges_with_the_rungs_it_had(tmp_path):
    state = str(tmp_path / "asha_state.pkl")
    a, b = SimpleNamespace(trial_id="a"), SimpleNamespace(trial_id="b")
    launch = _asha(state_path=state)
    pickled = pickle.dumps(launch)  # what tuner.pkl holds: the scheduler before any trial
    launch.on_trial_add(None, a)
    assert launch.on_trial_result(None, a, {"training_iteration": 1, "loss": 0.5}) == TrialScheduler.CONTINUE
    launch.on_trial_add(None, b)

    resumed = pickle.loads(pickled)  # Tuner.restore
    for trial in (a, b):  # Tune adds the restored trials
        resumed.on_trial_add(None, trial)
    assert resumed.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.STOP  # vs a's 0.5
    fresh = _asha(b)  # no state kept: empty rungs, nothing to compare with
    assert fresh.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.CONTINUE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asha_state.pkl"]  # no partial file left
