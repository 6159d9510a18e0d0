"""Rebuilding a trial's config from a frame row, and choosing trials to inspect."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.frame import AnalysisError
from analysis.trial_model import select_trials, showcase, trial_config
from tests.analysis.conftest import frame


def test_trial_config__ints_made_float_by_other_methods_nans_come_back_as_ints():
    df = pd.DataFrame([{"method": "moco_v2", "data.corruption": "glo_4", "optim.epochs": 2, "system.seed": 1,
                        "method.queue_size": 1024, "model.width": 0.125, "data.image_size": None},
                       {"method": "supervised", "data.corruption": "ori", "optim.epochs": 2, "system.seed": 1,
                        "method.queue_size": math.nan, "model.width": 0.125, "data.image_size": None}])
    cfg = trial_config(df.iloc[0])
    assert dict(cfg.method_params)["queue_size"] == 1024 and isinstance(dict(cfg.method_params)["queue_size"], int)
    assert cfg.system.device == "cpu" and cfg.system.precision == "fp32" and cfg.data.image_size is None
    assert trial_config(df.iloc[1]).method == "supervised"  # moco's queue_size column is dropped


def test_select_trials__unknown_value_lists_the_valid_ones():
    df = frame({("moco_v2", "ori"): [50], ("supervised", "glo_4"): [40]})
    assert list(select_trials(df, method="moco_v2")["corruption"]) == ["ori"]
    with pytest.raises(AnalysisError, match="no trial with arm 'byol'; valid: moco_v2, supervised"):
        select_trials(df, method="byol")


def test_showcase__ori_and_one_setting_per_family_per_method_untrained_last():
    accs = {(arm, c): [50, 51] for arm in ("moco_v2", "supervised") for c in ("ori", "glo_2", "glo_4", "loc_4")}
    accs[("untrained", "ori")] = [10, 11]
    picks = showcase(frame(accs))
    assert list(zip(picks["arm"], picks["corruption"], strict=True)) == [
        ("supervised", "ori"), ("supervised", "glo_4"), ("supervised", "loc_4"),
        ("moco_v2", "ori"), ("moco_v2", "glo_4"), ("moco_v2", "loc_4"), ("untrained", "ori")]
    assert set(picks["seed"]) == {0}
