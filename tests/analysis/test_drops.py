"""Relative drops with matched clean trials, spreads over seeds or binomial, and the outputs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis import drops, stats
from analysis.frame import AnalysisError
from tests.analysis.conftest import frame

ACCS = {
    ("supervised", "ori"): [80, 84, 82],
    ("supervised", "glo_4"): [60, 63, 60],
    ("moco_v2", "ori"): [50, 50, 50],
    ("moco_v2", "glo_4"): [25, 30, 20],
    ("untrained", "ori"): [20, 20, 20],
    ("untrained", "glo_4"): [19, 18, 20],
}


def test_relative_drops__each_corrupted_trial_uses_its_own_seeds_clean_accuracy():
    d = drops.relative_drops(frame(ACCS)).set_index(["arm", "seed"])
    assert d.loc[("supervised", 0), "drop"] == pytest.approx(25.0)
    assert d.loc[("supervised", 1), "drop"] == pytest.approx(25.0)
    assert d.loc[("moco_v2", 2), "drop"] == pytest.approx(60.0)
    assert d.loc[("untrained", 1), "drop"] == pytest.approx(10.0)


def test_relative_drops__a_different_budget_is_not_a_match():
    df = pd.concat(
        [
            frame({("supervised", "ori"): [80]}, **{"model.width": 1.0}),
            frame({("supervised", "glo_4"): [60]}, **{"model.width": 0.5}),
        ]
    )
    assert drops.relative_drops(df).empty
    assert drops.drop_table(df) is None


def test_drop_table__keeps_the_minimal_sweep_summary_frame_working():
    df = pd.DataFrame(
        {
            "method": ["a", "a", "a"],
            "corruption": ["ori", "glo_4", "loc_4"],
            "seed": [0, 0, 0],
            "knn_acc": [80.0, 60.0, 40.0],
        }
    )
    table = drops.drop_table(df)
    assert list(table.columns) == ["glo_4", "loc_4", "Avg"]
    assert table.loc["a"].tolist() == pytest.approx([25.0, 50.0, 37.5])
    assert drops.accuracy_table(df).loc["a", "ori"] == 80.0


def test_drop_summary__mean_std_and_t_interval_over_seeds_with_avg():
    s = drops.drop_summary(frame(ACCS)).set_index(["arm", "corruption"])
    moco = s.loc[("moco_v2", "glo_4")]
    assert (moco["mean"], moco["spread"], moco["n_seeds"], moco["spread_kind"]) == (
        pytest.approx(50.0),
        pytest.approx(10.0),
        3,
        "std",
    )
    assert (moco["low"], moco["high"]) == pytest.approx(stats.mean_interval([50, 40, 60])[2:])
    assert s.loc[("moco_v2", "Avg"), "mean"] == pytest.approx(50.0)
    assert list(s.index.get_level_values(0).unique()) == ["supervised", "moco_v2", "untrained"]


def test_drop_summary__one_seed_shows_the_binomial_error_of_the_drop():
    s = drops.drop_summary(frame({("moco_v2", "ori"): [50], ("moco_v2", "glo_4"): [25]})).set_index("corruption")
    se = stats.drop_se(50, stats.binomial_se(50, 1000), 25, stats.binomial_se(25, 1000))
    assert s.loc["glo_4", "spread_kind"] == "binomial"
    assert s.loc["glo_4", "spread"] == pytest.approx(se) and s.loc["glo_4", "high"] == pytest.approx(50 + stats.Z * se)


def test_accuracy_summary__one_seed_binomial_error_uses_test_per_class_times_classes():
    s = drops.accuracy_summary(frame({("moco_v2", "ori"): [80]})).iloc[0]
    assert s["spread"] == pytest.approx(100 * math.sqrt(0.8 * 0.2 / 1000))


def test_require_clean__names_the_corruptions_found():
    with pytest.raises(AnalysisError, match=r"'x' has no clean \(ori\) trial.*found: glo_4"):
        drops.require_clean(frame({("moco_v2", "glo_4"): [25]}), "x")


def test_wide_and_markdown__cells_read_mean_plus_minus_spread():
    text = drops.markdown(drops.wide(drops.drop_summary(frame(ACCS))), "arm")
    assert "| arm | glo_4 | Avg |" in text
    assert "| supervised | 25.6 ± 1.1 | 25.6 ± 1.1 |" in text
    # moco_v2 on glo_4 (25, 30, 20) is not above the untrained network (19, 18, 20) beyond its error
    assert "| moco_v2 | 50.0 ± 10.0 [floor] | 50.0 ± 10.0 [floor] |" in text
    assert "| untrained |" in text


def test_drop_figure__one_bar_per_arm_and_column():
    fig = drops.drop_figure(drops.drop_summary(frame(ACCS)))
    assert len(fig.axes[0].patches) == 3 * 2  # 3 arms x (glo_4, Avg)


def test_spread_note__says_when_the_untrained_reference_is_missing():
    with_ref = drops.spread_note(drops.drop_summary(frame(ACCS)))
    without = drops.spread_note(drops.drop_summary(frame({k: v for k, v in ACCS.items() if k[0] != "untrained"})))
    assert "`untrained`: the backbone at initialisation" in with_ref and "include_untrained: true" in without


FLOOR_ACCS = {
    ("supervised", "ori"): [80, 84],
    ("supervised", "glo_4"): [60, 63],
    ("moco_v2", "ori"): [50, 52],
    ("moco_v2", "glo_4"): [25, 30],
    ("untrained", "ori"): [20, 22],
    ("untrained", "glo_4"): [18, 15],
}


def floor_drop(a_ori, a_c, f_ori, f_c):
    return 100 * ((a_ori - f_ori) - (a_c - f_c)) / (a_ori - f_ori)


def test_relative_drops__floor_drop_uses_the_untrained_trial_of_the_same_seed_and_corruption():
    d = drops.relative_drops(frame(FLOOR_ACCS)).set_index(["arm", "seed"])
    assert d.loc[("moco_v2", 1), "floor_drop"] == pytest.approx(floor_drop(52, 30, 22, 15))
    assert d.loc[("supervised", 0), "floor_drop"] == pytest.approx(floor_drop(80, 60, 20, 18))
    assert d.loc[("supervised", 0), "drop"] == pytest.approx(25.0)  # the study's measure is unchanged
    assert math.isnan(d.loc[("untrained", 0), "floor_drop"])


def test_relative_drops__floor_needs_the_same_network_not_the_same_method_or_optimiser():
    df = frame(FLOOR_ACCS, **{"optim.lr": 0.3})
    df.loc[df["method"] == "moco_v2", "optim.lr"] = 0.06  # a method's own optimiser still matches the floor
    df.loc[(df["optim.epochs"] == 0) & (df["system.seed"] == 1), "model.width"] = 1.0  # another network does not
    d = drops.relative_drops(df).set_index(["arm", "seed"])
    assert d.loc[("moco_v2", 0), "floor_drop"] == pytest.approx(floor_drop(50, 25, 20, 18))
    assert math.isnan(d.loc[("moco_v2", 1), "floor_drop"])


def test_relative_drops__floor_drop_is_nan_without_untrained_trials():
    d = drops.relative_drops(frame({k: v for k, v in FLOOR_ACCS.items() if k[0] != "untrained"}))
    assert d["floor_drop"].isna().all() and d["drop"].notna().all()
    assert drops.drop_summary(frame({("moco_v2", "ori"): [50], ("moco_v2", "glo_4"): [25]}), measure="floor_drop").empty


def test_drop_summary__floor_drop_over_seeds_and_with_one_seed_the_delta_method():
    s = drops.drop_summary(frame(FLOOR_ACCS), measure="floor_drop").set_index(["arm", "corruption"])
    per_seed = [floor_drop(50, 25, 20, 18), floor_drop(52, 30, 22, 15)]
    assert s.loc[("moco_v2", "glo_4"), ["mean", "spread"]].tolist() == pytest.approx(stats.mean_interval(per_seed)[:2])
    assert "untrained" not in s.index.get_level_values(0)
    one = drops.drop_summary(frame({k: v[:1] for k, v in FLOOR_ACCS.items()}), measure="floor_drop")
    one = one.set_index(["arm", "corruption"]).loc[("moco_v2", "glo_4")]
    se = stats.binomial_se
    expected = stats.drop_se(
        50 - 20, math.hypot(se(50, 1000), se(20, 1000)), 25 - 18, math.hypot(se(25, 1000), se(18, 1000))
    )
    assert one["spread_kind"] == "binomial" and one["spread"] == pytest.approx(expected)


def test_relative_drops__an_at_n_arm_pairs_with_its_own_clean_trial():
    full = frame({("supervised", "ori"): [80], ("supervised", "glo_4"): [60]})
    few = frame({("supervised", "ori"): [50], ("supervised", "glo_4"): [45]}, **{"data.labels_per_class": 100})
    d = drops.relative_drops(pd.concat([full, few], ignore_index=True)).set_index("arm")
    assert d.loc["supervised", "drop"] == pytest.approx(25.0) and d.loc["supervised@100", "drop"] == pytest.approx(10.0)
    assert len(d) == 2


def test_trial_drops__one_row_per_corrupted_trial_with_both_measures():
    t = drops.trial_drops(frame(FLOOR_ACCS))
    assert {"drop", "floor_drop", "floor", "floor_clean", "knn_acc"} <= set(t.columns) and len(t) == 6
    assert drops.floor_text(drops.drop_summary(frame(FLOOR_ACCS), measure="floor_drop")).count("| moco_v2 |") == 1
    assert drops.floor_text(pd.DataFrame(columns=drops.SUMMARY_COLUMNS)) == drops.NO_FLOOR


def test_drop_terms__an_unknown_measure_lists_the_valid_ones():
    with pytest.raises(AnalysisError, match="unknown drop measure 'x'; valid: drop, floor_drop"):
        drops.drop_terms(drops.relative_drops(frame(FLOOR_ACCS)), "knn_acc", "x")


def test_floor_gaps__a_gain_over_the_untrained_network_inside_its_error_is_at_floor():
    gaps = drops.floor_gaps(frame(ACCS)).set_index(["arm", "corruption"])
    moco = gaps.loc[("moco_v2", "glo_4")]
    assert moco["mean"] == pytest.approx(6.0) and (moco["low"], moco["high"]) == pytest.approx(
        stats.mean_interval([6, 12, 0])[2:]
    )
    assert bool(moco["at_floor"]) and not gaps.loc[("moco_v2", "ori"), "at_floor"]
    assert not gaps.loc[("supervised", "glo_4"), "at_floor"] and "untrained" not in gaps.index.get_level_values(0)


def test_floor_gaps__one_seed_uses_the_binomial_errors_of_both_accuracies():
    accs = {
        ("moco_v2", "ori"): [23.0],
        ("moco_v2", "glo_4"): [30.0],
        ("untrained", "ori"): [20.0],
        ("untrained", "glo_4"): [20.0],
    }
    gaps = drops.floor_gaps(frame(accs)).set_index("corruption")
    se = math.hypot(stats.binomial_se(23, 1000), stats.binomial_se(20, 1000))
    assert gaps.loc["ori", "spread"] == pytest.approx(se) and gaps.loc["ori", "spread_kind"] == "binomial"
    assert bool(gaps.loc["ori", "at_floor"]) and not gaps.loc["glo_4", "at_floor"]  # 3 +- 3.6 points, 10 +- 3.7


def test_floor_marks__every_table_marks_cells_inside_the_floors_error_and_says_what_the_mark_means():
    accs = {
        ("supervised", "ori"): [80.0],
        ("supervised", "glo_4"): [60.0],
        ("supervised", "glo_8"): [21.0],
        ("untrained", "ori"): [20.0],
        ("untrained", "glo_4"): [20.0],
        ("untrained", "glo_8"): [20.0],
    }
    acc = drops.wide(drops.accuracy_summary(frame(accs))).loc["supervised"]
    assert acc["glo_8"].endswith(" [floor]") and not acc["glo_4"].endswith("]") and not acc["ori"].endswith("]")
    summary = drops.drop_summary(frame(accs))
    table = drops.wide(summary).loc["supervised"]
    assert table["glo_8"].endswith(" [floor]") and table["Avg"].endswith(" [floor]") and "[floor]" not in table["glo_4"]
    assert drops.FLOOR_MARK in drops.spread_note(summary) and "not a finding" in drops.spread_note(summary)
    clean_at_floor = {**accs, ("supervised", "ori"): [22.0], ("supervised", "glo_4"): [21.0]}
    assert drops.wide(drops.drop_summary(frame(clean_at_floor))).loc["supervised", "glo_4"].endswith(" [floor]")


def test_floor_marks__without_an_untrained_reference_nothing_is_marked():
    summary = drops.drop_summary(frame({("supervised", "ori"): [22.0], ("supervised", "glo_4"): [21.0]}))
    assert not summary["at_floor"].any() and drops.FLOOR_MARK not in drops.spread_note(summary)
