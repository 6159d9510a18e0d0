"""Small statistics used by every table: intervals over seeds, binomial errors, bootstrap r.

Pure numpy/scipy functions of arrays; no pandas, no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
Z = float(stats.norm.ppf(0.5 + LEVEL / 2))  # 1.96


def mean_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """Mean, sample std and the Student-t interval of the mean over seeds.

    Args:
        values: one number per seed (NaNs are dropped).
        level: coverage of the interval.

    Returns:
        (mean, std, low, high); std and the interval are NaN with fewer than 2 values.
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return (math.nan,) * 4
    if len(x) < 2:
        return float(x[0]), math.nan, math.nan, math.nan
    mean, std = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1)) * std / math.sqrt(len(x))
    return mean, std, mean - half, mean + half


def binomial_se(acc: float | np.ndarray, n: float | np.ndarray) -> float | np.ndarray:
    """Sampling error of an accuracy over ``n`` test images: ``100 sqrt(p (1 - p) / n)``.

    Args:
        acc: accuracy in percent [0, 100].
        n: number of evaluated test images (NaN gives NaN).
    """
    p = np.asarray(acc, dtype=float) / 100
    return 100 * np.sqrt(p * (1 - p) / np.asarray(n, dtype=float))


def drop_se(clean: float, clean_se: float, corrupted: float, corrupted_se: float) -> float:
    """Delta-method error of ``100 (A_o - A_c) / A_o`` from independent errors of A_o and A_c."""
    d_corrupted = 100 / clean
    d_clean = 100 * corrupted / clean**2
    return float(math.sqrt((d_corrupted * corrupted_se) ** 2 + (d_clean * clean_se) ** 2))


def correlation(x: np.ndarray, y: np.ndarray, kind: str = "pearson", groups: np.ndarray | None = None) -> float:
    """Pearson or Spearman r; with ``groups``, pooled *within* groups (each group centred).

    Pooling within groups removes level differences between groups (e.g. methods whose
    uniformity sits on different scales) and keeps how y moves with x inside each group.
    """
    r = row_correlation(np.asarray(x, float)[None], np.asarray(y, float)[None], kind, group_ids(groups, len(x)))
    return float(r[0])


def bootstrap_correlation(
    x: np.ndarray,
    y: np.ndarray,
    kind: str = "pearson",
    groups: np.ndarray | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Correlation and its percentile-bootstrap interval (rows resampled within groups).

    Args:
        x, y: (N,) paired observations (one per trial).
        kind: ``pearson`` or ``spearman``.
        groups: (N,) labels; resampling and centring happen within each group.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator (results are reproducible).
        level: coverage of the interval.

    Returns:
        (r, low, high); NaN when r is undefined (fewer than 3 points or a constant variable).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ids = group_ids(groups, len(x))
    r = float(row_correlation(x[None], y[None], kind, ids)[0])
    if len(x) < 3 or math.isnan(r):
        return r, math.nan, math.nan
    index = resample_index(ids, n_boot, seed)
    return (r, *percentile_interval(row_correlation(x[index], y[index], kind, ids), level))


def resample_index(ids: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, N) bootstrap row indices, each row resampled within its group's positions."""
    rng = np.random.default_rng(seed)
    index = np.empty((n_boot, len(ids)), dtype=int)
    for g in np.unique(ids):
        members = np.flatnonzero(ids == g)
        index[:, members] = rng.choice(members, size=(n_boot, len(members)))
    return index


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap samples (NaNs ignored)."""
    if np.isnan(samples).all():
        return math.nan, math.nan
    low, high = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def group_ids(groups, n: int) -> np.ndarray:
    """Integer group labels 0..G-1 (all zeros without groups)."""
    if groups is None:
        return np.zeros(n, dtype=int)
    return np.unique(np.asarray(groups), return_inverse=True)[1]


def row_correlation(x: np.ndarray, y: np.ndarray, kind: str, ids: np.ndarray) -> np.ndarray:
    """Row-wise r of (B, N) arrays, after within-group ranking (Spearman) and centring."""
    if kind not in ("pearson", "spearman"):
        raise ValueError(f"correlation kind {kind!r} is invalid; valid: pearson, spearman")
    x, y = x.copy(), y.copy()
    for g in np.unique(ids):
        cols = ids == g
        if kind == "spearman":
            x[:, cols] = stats.rankdata(x[:, cols], axis=1)
            y[:, cols] = stats.rankdata(y[:, cols], axis=1)
        x[:, cols] -= x[:, cols].mean(axis=1, keepdims=True)
        y[:, cols] -= y[:, cols].mean(axis=1, keepdims=True)
    num = (x * y).sum(axis=1)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * np.maximum(1, np.abs(num)), num / den, np.nan)


def verdict(low: float, high: float) -> str:
    """PASS if the interval lies above 0, FAIL if below, else INCONCLUSIVE."""
    if math.isnan(low) or math.isnan(high):
        return "INCONCLUSIVE"
    return "PASS" if low > 0 else "FAIL" if high < 0 else "INCONCLUSIVE"


def within_verdict(low: float, high: float, tolerance: float) -> str:
    """An equivalence verdict for "about zero": PASS if the interval lies inside
    (-tolerance, +tolerance), FAIL if it lies entirely outside, else INCONCLUSIVE."""
    if math.isnan(low) or math.isnan(high):
        return "INCONCLUSIVE"
    if -tolerance < low and high < tolerance:
        return "PASS"
    return "FAIL" if low > tolerance or high < -tolerance else "INCONCLUSIVE"


def below_verdict(low: float, high: float, limit: float) -> str:
    """PASS if the interval's upper end is at or below ``limit``, FAIL if its lower end is above."""
    if math.isnan(low) or math.isnan(high):
        return "INCONCLUSIVE"
    return "PASS" if high <= limit else "FAIL" if low > limit else "INCONCLUSIVE"


def all_of(verdicts: Sequence[str]) -> str:
    """A compound claim: FAIL if any part fails, PASS if every part passes, else INCONCLUSIVE."""
    if "FAIL" in verdicts:
        return "FAIL"
    return "PASS" if verdicts and all(v == "PASS" for v in verdicts) else "INCONCLUSIVE"


def pooled_sd(variances: Sequence[float], dofs: Sequence[int], level: float = LEVEL) -> tuple[float, float, float, int]:
    """Pooled standard deviation of several groups and its chi-square interval.

    ``s_p^2 = sum(dof_i s_i^2) / sum(dof_i)``; with normal errors ``dof s_p^2 / sigma^2`` is
    chi-square with ``dof = sum(dof_i)`` degrees of freedom, which gives the interval of sigma.

    Args:
        variances: sample variances (ddof 1) of the groups.
        dofs: their degrees of freedom (group size - 1), each >= 1.

    Returns:
        (sd, low, high, dof); NaNs and dof 0 without groups.
    """
    dof = int(sum(dofs))
    if dof == 0:
        return math.nan, math.nan, math.nan, 0
    var = float(np.dot(np.asarray(variances, float), np.asarray(dofs, float))) / dof
    low = math.sqrt(dof * var / stats.chi2.ppf(0.5 + level / 2, dof))
    high = math.sqrt(dof * var / stats.chi2.ppf(0.5 - level / 2, dof))
    return math.sqrt(var), low, high, dof
