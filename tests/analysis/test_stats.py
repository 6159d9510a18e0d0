"""Intervals over seeds, binomial errors and bootstrap correlations against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import stats


def test_mean_interval__matches_the_student_t_formula():
    mean, std, low, high = stats.mean_interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert low == pytest.approx(2 - half) and high == pytest.approx(2 + half)


def test_mean_interval__one_value_has_no_spread():
    mean, std, low, high = stats.mean_interval([5.0, math.nan])
    assert mean == 5.0 and math.isnan(std) and math.isnan(low) and math.isnan(high)


def test_binomial_se__is_sqrt_p_one_minus_p_over_n_in_percent():
    assert stats.binomial_se(80.0, 100) == pytest.approx(100 * math.sqrt(0.8 * 0.2 / 100))
    assert stats.binomial_se(100.0, 50) == 0


def test_drop_se__matches_a_numerical_derivative():
    def drop(clean, corrupted):
        return 100 * (clean - corrupted) / clean

    clean, corrupted, se_o, se_c, h = 80.0, 60.0, 1.5, 2.0, 1e-6
    d_clean = (drop(clean + h, corrupted) - drop(clean - h, corrupted)) / (2 * h)
    d_corr = (drop(clean, corrupted + h) - drop(clean, corrupted - h)) / (2 * h)
    expected = math.sqrt((d_clean * se_o) ** 2 + (d_corr * se_c) ** 2)
    assert stats.drop_se(clean, se_o, corrupted, se_c) == pytest.approx(expected, rel=1e-6)


def test_bootstrap_correlation__recovers_a_known_correlation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = 0.6 * x + 0.8 * rng.normal(size=400)  # population r = 0.6
    r, low, high = stats.bootstrap_correlation(x, y, "pearson", n_boot=500)
    assert low < 0.6 < high and high - low < 0.2 and r == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_bootstrap_correlation__independent_data_interval_spans_zero():
    rng = np.random.default_rng(1)
    _, low, high = stats.bootstrap_correlation(rng.normal(size=50), rng.normal(size=50), "spearman", n_boot=500)
    assert low < 0 < high


def test_correlation__within_groups_removes_a_between_group_trend():
    # Inside each group y falls with x; the groups' levels make the pooled raw r positive.
    x = np.array([0, 1, 2, 10, 11, 12], float)
    y = np.array([2, 1, 0, 12, 11, 10], float)
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    assert stats.correlation(x, y) > 0.9
    assert stats.correlation(x, y, "spearman", groups) == pytest.approx(-1.0)


def test_correlation__constant_variable_is_nan():
    assert math.isnan(stats.correlation(np.arange(5.0), np.ones(5)))


def test_verdict__follows_the_interval_around_zero():
    assert stats.verdict(0.1, 2) == "PASS" and stats.verdict(-2, -0.1) == "FAIL"
    assert stats.verdict(-1, 1) == "INCONCLUSIVE" and stats.verdict(math.nan, 1) == "INCONCLUSIVE"


def test_pooled_sd__weights_variances_by_degrees_of_freedom_with_a_chi_square_interval():
    groups = [[1.0, 2.0, 3.0], [5.0, 7.0]]  # variances 1 and 2, dof 2 and 1
    sd, low, high, dof = stats.pooled_sd([np.var(g, ddof=1) for g in groups], [len(g) - 1 for g in groups])
    assert dof == 3 and sd == pytest.approx(math.sqrt((2 * 1 + 1 * 2) / 3))
    assert low == pytest.approx(sd * math.sqrt(3 / 9.348403604496148))  # chi2_{0.975, 3}
    assert high == pytest.approx(sd * math.sqrt(3 / 0.21579528629089034))  # chi2_{0.025, 3}
    assert math.isnan(stats.pooled_sd([], [])[0])


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [(-1, 2, "PASS"), (3.5, 5, "FAIL"), (-9, -4, "FAIL"), (1, 4, "INCONCLUSIVE"), (math.nan, 1, "INCONCLUSIVE")],
)
def test_within_verdict__inside_passes_entirely_outside_fails(low, high, verdict):
    assert stats.within_verdict(low, high, 3.0) == verdict


def test_below_verdict_and_all_of():
    assert [stats.below_verdict(lo, hi, 1.0) for lo, hi in ((0.2, 1.0), (1.1, 2), (0.5, 1.5))] == [
        "PASS",
        "FAIL",
        "INCONCLUSIVE",
    ]
    assert stats.all_of(["PASS", "PASS"]) == "PASS" and stats.all_of(["PASS", "FAIL"]) == "FAIL"
    assert stats.all_of(["PASS", "INCONCLUSIVE"]) == "INCONCLUSIVE" and stats.all_of([]) == "INCONCLUSIVE"
