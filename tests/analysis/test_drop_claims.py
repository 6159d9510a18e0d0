"""C1/C2 against the study's numbers, the floor-corrected and accuracy-matched variants, and C7:
each built to PASS, to FAIL and to be INCONCLUSIVE."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import paper, stats
from analysis.claims import claim_checks
from tests.analysis.conftest import drops_frame, frame, row

JITTER = [0.0, 0.5, -0.5]  # points added to one arm's drops per seed: a t interval of half-width
HALF = stats.mean_interval(JITTER)[3]  # 4.30 * 0.5 / sqrt(3) = 1.24


def gaps(sup: dict, cl: dict, jitter=JITTER) -> pd.DataFrame:
    return claim_checks(drops_frame({"supervised": sup, "moco_v2": cl}, jitter={"moco_v2": jitter}))


def test_c1_avg__paper_column_is_the_study_mean_over_the_corruptions_run():
    table = gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 25, "loc_8": 13})
    study = {
        m: (paper.PAPER_DROP[(m, "glo_4")] + paper.PAPER_DROP[(m, "loc_8")]) / 2 for m in ("moco_v2", "supervised")
    }
    avg = row(table, "C1.avg", "moco_v2 > supervised")
    assert avg["paper"] == f"{study['moco_v2']:.1f} > {study['supervised']:.1f}" == "18.8 > 14.2"  # not 24.5 > 20.3
    assert avg["verdict"] == "PASS" and avg["effect"] == pytest.approx((25 + 13) / 2 - (15 + 13) / 2)
    other = gaps({"glo_2": 15}, {"glo_2": 25})  # no level of Table 1: the study's row waits, an extension reports
    assert row(other, "C1.avg")["missing"] == "trials of Table 1's levels (glo_8, glo_4, loc_4, loc_8)"
    assert row(other, "C1.avg.ext", "moco_v2 > supervised")["paper"] == "n/a: Table 1 has no glo_2"
    assert row(table, "C1.glo", "glo_4")["paper"] == f"{paper.PAPER_DROP[('moco_v2', 'glo_4')]} > 15.0"


def test_c2_gap__passes_with_a_positive_global_gap_and_a_local_gap_near_zero():
    gap = row(gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 25, "loc_8": 13}), "C2.gap")
    assert gap["verdict"] == "PASS" and gap["effect"] == pytest.approx(10)
    assert (gap["low"], gap["high"]) == pytest.approx((10 - HALF, 10 + HALF))
    assert f"[{-HALF:+.2f}, {HALF:+.2f}] vs ±{paper.LOCAL_GAP_TOLERANCE:g}: PASS" in gap["interval"]  # the local gap
    assert gap["paper"].startswith("global gap +9.3, local gap -0.1")  # Table 1: 24.3 - 15.0, 13.3 - 13.4


def test_c2_gap__fails_when_the_global_gap_is_below_zero():
    gap = row(gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 5, "loc_8": 13}), "C2.gap")
    assert gap["verdict"] == "FAIL" and gap["effect"] == pytest.approx(-10) and gap["high"] < 0


def test_c2_gap__fails_when_the_local_gap_lies_outside_the_tolerance():
    local = 13 + paper.LOCAL_GAP_TOLERANCE + 2 * HALF  # the whole interval above +3
    gap = row(gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 25, "loc_8": local}), "C2.gap")
    assert gap["verdict"] == "FAIL" and gap["low"] > 0  # the global part alone would pass
    assert gap["interval"].endswith(": FAIL")


def test_c2_gap__inconclusive_when_the_local_interval_straddles_the_tolerance():
    gap = row(gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 25, "loc_8": 13 + paper.LOCAL_GAP_TOLERANCE}), "C2.gap")
    assert gap["verdict"] == "INCONCLUSIVE" and not gap["missing"] and gap["interval"].endswith(": INCONCLUSIVE")


def test_c2_cl__is_the_difference_of_the_global_minus_local_drops():
    table = gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 25, "loc_8": 14})
    c2 = row(table, "C2.cl")
    assert c2["verdict"] == "PASS" and c2["effect"] == pytest.approx((25 - 14) - (15 - 13))
    assert c2["paper"] == "(24.3 - 13.3) - (15.0 - 13.4) = +9.4"
    fails = row(gaps({"glo_4": 15, "loc_8": 13}, {"glo_4": 14, "loc_8": 20}), "C2.cl")
    assert fails["verdict"] == "FAIL" and fails["effect"] == pytest.approx((14 - 20) - (15 - 13))
    # the jitter moves glo and loc together, so it cancels; jitter on glo only does not
    noisy = drops_frame(
        {"supervised": {"glo_4": 15, "loc_8": 13}, "moco_v2": {"glo_4": 17, "loc_8": 13}},
        jitter={"moco_v2": [0, 4, -4]},
    )
    noisy.loc[noisy["data.corruption"] == "loc_8", "knn_acc"] = 80 * (1 - 0.13)
    assert row(claim_checks(noisy), "C2.cl")["verdict"] == "INCONCLUSIVE"


def weak_learner(untrained_glo: float, seeds: int = 3) -> pd.DataFrame:
    """A weak CL arm (40% clean) and a strong supervised one (80%) over an untrained floor of 30%."""
    jitter = [0.0, 0.4, -0.4][:seeds]
    accs = {
        ("supervised", "ori"): [80.0] * seeds,
        ("supervised", "glo_4"): [68.0 + j for j in jitter],
        ("moco_v2", "ori"): [40.0] * seeds,
        ("moco_v2", "glo_4"): [28.0 - j for j in jitter],
        ("untrained", "ori"): [30.0] * seeds,
        ("untrained", "glo_4"): [untrained_glo] * seeds,
    }
    return frame(accs)


def floor_drop(a_ori, a_c, f_ori, f_c):
    return 100 * ((a_ori - f_ori) - (a_c - f_c)) / (a_ori - f_ori)


def test_floor_claims__secondary_measure_beside_the_study_measure():
    table = claim_checks(weak_learner(untrained_glo=29.0))
    study = row(table, "C1.glo", "glo_4) > Δ(supervised, glo_4)")  # moco_v2 × glo_4 (28%) is at the floor (29%)
    assert study["verdict"] == "INCONCLUSIVE" and study["missing"] == "moco_v2 × glo_4 above the untrained floor"
    floor = row(table, "C1.glo.floor", "glo_4")
    expected = floor_drop(40, 28, 30, 29) - floor_drop(80, 68, 30, 29)
    assert floor["verdict"] == "PASS" and floor["effect"] == pytest.approx(expected)
    assert "secondary measure" in floor["claim"] and floor["paper"].startswith("no study value; uncorrected:")


def test_floor_claims__fail_where_the_floor_explains_the_study_measure():
    # the untrained network itself loses 20 points on glo_4: the weak learner's gain over it grows
    table = claim_checks(weak_learner(untrained_glo=10.0))
    assert row(table, "C1.glo", "glo_4")["verdict"] == "PASS"
    floor = row(table, "C1.avg.floor", "moco_v2 > supervised")
    assert floor["verdict"] == "FAIL"
    assert floor["effect"] == pytest.approx(floor_drop(40, 28, 30, 10) - floor_drop(80, 68, 30, 10))


def test_floor_claims__inconclusive_naming_the_missing_untrained_trials():
    table = claim_checks(drops_frame({"supervised": {"glo_4": 15, "loc_8": 13}, "moco_v2": {"glo_4": 25, "loc_8": 13}}))
    for cid in ("C1.avg.floor", "C2.gap.floor", "C2.cl.floor"):
        r = row(table, cid, "moco_v2")
        assert (
            r["verdict"] == "INCONCLUSIVE" and r["missing"] == "untrained × ori, untrained × glo_4, untrained × loc_8"
        )
    assert row(table, "C2.gap", "moco_v2")["verdict"] == "PASS"  # the study's measure does not need them


def test_floor_claims__inconclusive_when_noise_spans_zero():
    accs = {
        ("supervised", "ori"): [80.0] * 3,
        ("supervised", "glo_4"): [68.0, 64.0, 72.0],
        ("moco_v2", "ori"): [80.0] * 3,
        ("moco_v2", "glo_4"): [68.0, 72.0, 64.0],
        ("untrained", "ori"): [30.0] * 3,
        ("untrained", "glo_4"): [29.0] * 3,
    }
    floor = row(claim_checks(frame(accs)), "C1.glo.floor", "glo_4")
    assert (
        floor["verdict"] == "INCONCLUSIVE" and floor["low"] < 0 < floor["high"] and floor["effect"] == pytest.approx(0)
    )


def with_matched(matched: dict[str, float], jitter=None) -> pd.DataFrame:
    """supervised (all labels), supervised@100 and moco_v2, the latter dropping 25 / 13 points."""
    full = drops_frame({"supervised": {"glo_4": 15, "loc_8": 13}, "moco_v2": {"glo_4": 25, "loc_8": 13}})
    few = drops_frame(
        {"supervised": matched},
        clean={"supervised": 60.0},
        jitter={"supervised": jitter or [0, 0, 0]},
        **{"data.labels_per_class": 100},
    )
    return pd.concat([full, few], ignore_index=True)


def test_matched_claims__compare_each_cl_arm_with_the_accuracy_matched_supervised_arm():
    table = claim_checks(with_matched({"glo_4": 18, "loc_8": 12}))
    avg = row(table, "C1.avg.matched", "moco_v2 > supervised@100")
    assert avg["verdict"] == "PASS" and avg["effect"] == pytest.approx((25 + 13) / 2 - (18 + 12) / 2)
    assert avg["paper"] == "no matched arm in the study; vs its supervised: 18.8 > 14.2"
    assert row(table, "C1.avg", "moco_v2 > supervised")["effect"] == pytest.approx((25 + 13) / 2 - (15 + 13) / 2)
    gap = row(table, "C2.gap.matched", "moco_v2-supervised@100")
    assert gap["verdict"] == "PASS" and gap["effect"] == pytest.approx(25 - 18)
    assert row(table, "C2.cl.matched", "supervised@100")["effect"] == pytest.approx((25 - 13) - (18 - 12))
    assert not table["claim"].str.contains("supervised@100 > supervised").any()  # never a CL arm


def test_matched_claims__fail_and_inconclusive():
    fails = claim_checks(with_matched({"glo_4": 30, "loc_8": 12}))
    assert row(fails, "C1.glo.matched", "glo_4")["verdict"] == "FAIL"
    noisy = claim_checks(with_matched({"glo_4": 25, "loc_8": 13}, jitter=[0, 3, -3]))
    assert row(noisy, "C1.avg.matched", "moco_v2")["verdict"] == "INCONCLUSIVE"
    lacking = claim_checks(with_matched({"glo_4": 25}))
    assert row(lacking, "C1.avg.matched", "moco_v2")["missing"] == "supervised@100 × loc_8"


def seeded(values: list[float], cells: int = 4) -> pd.DataFrame:
    """``cells`` arm x corruption cells whose seeds have these accuracies (each cell shifted)."""
    names = [("supervised", "ori"), ("supervised", "glo_4"), ("moco_v2", "ori"), ("moco_v2", "glo_4")][:cells]
    return frame({cell: [70 - 5 * i + v for v in values] for i, cell in enumerate(names)})


def chi_square_interval(values: list[float], cells: int = 4) -> tuple[float, float, float]:
    sd, dof = float(np.std(values, ddof=1)), cells * (len(values) - 1)
    return sd, sd * math.sqrt(dof / sps.chi2.ppf(0.975, dof)), sd * math.sqrt(dof / sps.chi2.ppf(0.025, dof))


@pytest.mark.parametrize(
    ("values", "verdict"), [([0.0, 0.2, -0.2], "PASS"), ([0.0, 3.0, -3.0], "FAIL"), ([0.0, 0.9, -0.9], "INCONCLUSIVE")]
)
def test_c7_seeds__pooled_seed_sd_against_the_limit(values, verdict):
    c7 = row(claim_checks(seeded(values)), "C7.seeds")
    sd, low, high = chi_square_interval(values)
    assert (c7["effect"], c7["low"], c7["high"]) == pytest.approx((sd, low, high))
    assert (
        c7["verdict"] == verdict
        and c7["unit"] == "acc pts"
        and c7["interval"].endswith("4 arm x corruption cells, 8 df")
    )
    assert (high <= paper.SEED_SD_LIMIT) == (verdict == "PASS") and (low > paper.SEED_SD_LIMIT) == (verdict == "FAIL")


def test_c7_seeds__one_seed_is_inconclusive():
    c7 = row(claim_checks(seeded([0.0])), "C7.seeds")
    assert c7["verdict"] == "INCONCLUSIVE" and c7["missing"] == "two or more seeds of an arm on one corruption"
