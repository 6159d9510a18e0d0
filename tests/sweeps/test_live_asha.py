"""sweeps/live_asha.py: ASHA passes over replayed reports and judges live ones as Ray's ASHA does."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from sweeps.live_asha import STATE_FILE, LiveASHA
from trainables.tune_adapter import REPLAYED


def _asha(*trials, keep_rungs=False):
    asha = LiveASHA(keep_rungs=keep_rungs, time_attr="training_iteration", mode="min", max_t=4, grace_period=1)
    asha.set_search_properties("loss", None)  # as Tune passes the TuneConfig's metric
    for trial in trials:
        asha.on_trial_add(None, trial)
    return asha


def test_live_asha__a_replayed_report_neither_stops_a_trial_nor_fills_a_rung():
    a, b = _trial("a"), _trial("b")
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
    a, b = _trial("a"), _trial("b")
    asha = _asha(a, b)
    assert asha.on_trial_result(None, a, {"training_iteration": 1, "loss": 0.5}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.STOP  # worse


def test_live_asha__a_resumed_search_judges_with_the_rungs_it_had(tmp_path):
    a, b = _trial("a", tmp_path / "exp"), _trial("b", tmp_path / "exp")
    (tmp_path / "exp").mkdir()
    launch = _asha(keep_rungs=True)
    pickled = pickle.dumps(launch)  # what tuner.pkl holds: the scheduler before any trial
    launch.on_trial_add(None, a)
    assert launch.on_trial_result(None, a, {"training_iteration": 1, "loss": 0.5}) == TrialScheduler.CONTINUE
    launch.on_trial_add(None, b)

    resumed = pickle.loads(pickled)  # Tuner.restore
    for trial in (a, b):  # Tune adds the restored trials
        resumed.on_trial_add(None, trial)
    assert resumed.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.STOP  # vs a's 0.5
    fresh = _asha(b)  # no rungs kept: nothing to compare with
    assert fresh.on_trial_result(None, b, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.CONTINUE
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [STATE_FILE]  # no partial file left

    (tmp_path / "exp").rename(tmp_path / "moved")  # a moved experiment reads and writes its own file
    moved, c = pickle.loads(pickled), _trial("c", tmp_path / "moved")
    moved.on_trial_add(None, c)
    assert moved.on_trial_result(None, c, {"training_iteration": 1, "loss": 3.0}) == TrialScheduler.STOP
    assert not (tmp_path / "exp").exists()


def test_live_asha__a_scheduler_pickled_before_rungs_were_kept_still_resumes(tmp_path):
    old = _asha()
    for attribute in ("keep_rungs", "_state", "_saved"):  # an older LiveASHA's pickled state lacks them
        old.__dict__.pop(attribute, None)
    resumed = pickle.loads(pickle.dumps(old))
    resumed.on_trial_add(None, _trial("a", tmp_path))
    assert (
        resumed.on_trial_result(None, _trial("a", tmp_path), {"training_iteration": 4, "loss": 1.0})
        == TrialScheduler.STOP
    )
    assert list(tmp_path.iterdir()) == []  # it keeps no rungs, as it did not before


def _trial(trial_id, experiment=None):
    """What the scheduler reads of a Tune trial: its id and its experiment's folder."""
    return SimpleNamespace(trial_id=trial_id, storage=SimpleNamespace(experiment_fs_path=str(experiment or "/nowhere")))
