"""Rebuilding a trial's config from a frame row, and choosing trials to inspect."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.frame import AnalysisError
from analysis.trial_model import select_trials, showcase, trial_config
from tests.analysis.conftest import frame


def test_trial_config__ints_made_float_by_other_methods_nans_come_back_as_ints():
    df = pd.DataFrame(
        [
            {
                "method": "moco_v2",
                "data.corruption": "glo_4",
                "optim.epochs": 2,
                "system.seed": 1,
                "method.queue_size": 1024,
                "model.width": 0.125,
                "data.image_size": None,
            },
            {
                "method": "supervised",
                "data.corruption": "ori",
                "optim.epochs": 2,
                "system.seed": 1,
                "method.queue_size": math.nan,
                "model.width": 0.125,
                "data.image_size": None,
            },
        ]
    )
    cfg = trial_config(df.iloc[0])
    assert dict(cfg.method_params)["queue_size"] == 1024 and isinstance(dict(cfg.method_params)["queue_size"], int)
    assert cfg.system.device == "cpu" and cfg.system.precision == "fp32" and cfg.data.image_size is None
    assert trial_config(df.iloc[1]).method == "supervised"  # moco's queue_size column is dropped


def test_trial_config__rebuilt_from_the_recorded_config_not_the_frame_columns(tmp_path):
    """A sweep's Tune folder -> the frame -> the trial's exact recorded config (columns may be NaN-widened)."""
    import json

    from analysis.collect import RECORDED_CONFIG, load_tune
    from trainables.config import TrialConfig

    recorded = (
        TrialConfig.from_flat(
            {
                "method": "moco_v2",
                "data.corruption": "glo_4",
                "system.seed": 3,
                "method.queue_size": 96,
                "optim.lr": 0.07,
            }
        )
        .resolved()
        .to_flat()
    )
    trial = tmp_path / "exp" / "moco_v2-glo_4-s3-ab_00000"
    trial.mkdir(parents=True)
    line = {"epoch": 1, "knn_acc": 40.0, "trial_id": "ab_00000", "done": True, "config": {"sweep.cell": recorded}}
    (trial / "result.json").write_text(json.dumps(line) + "\n")
    row = load_tune(tmp_path / "exp").iloc[0].copy()
    assert row[RECORDED_CONFIG] == recorded
    row["method.queue_size"], row["optim.lr"] = float("nan"), 9.9  # what a merged frame could hold
    flat = trial_config(row).to_flat()
    assert flat["method.queue_size"] == 96 and flat["optim.lr"] == 0.07 and flat["system.seed"] == 3
    assert (flat["system.device"], flat["system.precision"]) == ("cpu", "fp32")  # inspected on the CPU in fp32


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
        ("supervised", "ori"),
        ("supervised", "glo_4"),
        ("supervised", "loc_4"),
        ("moco_v2", "ori"),
        ("moco_v2", "glo_4"),
        ("moco_v2", "loc_4"),
        ("untrained", "ori"),
    ]
    assert set(picks["seed"]) == {0}
