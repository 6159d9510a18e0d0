"""Effect sizes with intervals, the building blocks of the claim checks.

An effect is a signed contrast over table cells (arm x corruption), written so that the claim
holds when it is positive. Its interval:

* two or more seeds shared by every cell: the contrast is computed per seed, then a Student-t
  95% interval over seeds;
* one seed: accuracies and drops get the binomial sampling error of each accuracy over the
  evaluated test images, propagated to the contrast (delta method, normal interval); other
  quantities (uniformity, distances) have no sampling model, so no interval;
* correlations: a percentile bootstrap over trials (resampled within methods).

A claim is PASS when the interval lies above zero, FAIL when below, and INCONCLUSIVE when it
spans zero, cannot be computed, or a needed cell is missing (``missing`` names it). A check
with another rule (a gap "about zero", a spread "small enough") says so in its claim text and
sets ``Evidence.decision`` from ``analysis.stats`` (``within_verdict``, ``below_verdict``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from analysis import stats
from analysis.drops import drop_terms

Cell = tuple[str, str]  # (arm, corruption)
# One row of the claims table (``check``): effect, low, high in ``unit``; the study's value in
# ``paper``; the sentence or table tested in ``quote`` (``analysis.paper.QUOTES``).
COLUMNS = [
    "id",
    "claim",
    "paper",
    "verdict",
    "effect",
    "low",
    "high",
    "unit",
    "n_seeds",
    "interval",
    "missing",
    "scope",
    "quote",
]


@dataclasses.dataclass(frozen=True)
class Evidence:
    """An effect, its 95% interval, how the interval was made, and what was missing."""

    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n_seeds: int = 0
    interval: str = ""
    missing: tuple[str, ...] = ()
    decision: str = ""  # a verdict from the check's own rule; empty: the interval against zero

    @property
    def verdict(self) -> str:
        if self.missing:
            return "INCONCLUSIVE"
        return self.decision or stats.verdict(self.low, self.high)


def weakness(verdict: str, low: float, effect: float) -> tuple:
    """Sort key, weakest first: FAIL, then INCONCLUSIVE, then PASS; within one, the lower interval
    end (the effect where there is no interval; neither: missing evidence, the weakest)."""
    key = effect if math.isnan(low) else low
    return {"FAIL": 0, "INCONCLUSIVE": 1, "PASS": 2}[verdict], -math.inf if math.isnan(key) else key


def weakest(named: list[tuple[str, Evidence]], what: str) -> Evidence:
    """The evidence of a claim that must hold for every one of ``named`` (name, evidence): the one
    that supports it least decides, a FAIL anywhere failing it; its interval text names it."""
    name, ev = min(named, key=lambda ne: weakness(ne[1].verdict, ne[1].low, ne[1].effect))
    if len(named) == 1:
        return ev
    return dataclasses.replace(ev, interval=f"{ev.interval}; weakest of {len(named)} {what}: {name}".lstrip("; "))


def check(cid: str, claim: str, paper: str, ev: Evidence, unit: str, quote: str = "") -> dict:
    """One row of the claims table (``COLUMNS`` but ``scope``)."""
    return {
        "id": cid,
        "claim": claim,
        "paper": paper,
        "verdict": ev.verdict,
        "effect": ev.effect,
        "low": ev.low,
        "high": ev.high,
        "unit": unit,
        "n_seeds": ev.n_seeds,
        "interval": ev.interval,
        "missing": ", ".join(ev.missing),
        "quote": quote,
    }


def missing_cells(table: pd.DataFrame, cells, value: str) -> tuple[str, ...]:
    """``arm × corruption`` names of cells with no non-NaN ``value`` in ``table``."""
    present = set(map(tuple, table.dropna(subset=[value])[["arm", "corruption"]].to_numpy()))
    return tuple(f"{a} × {c}" for a, c in cells if (a, c) not in present)


def _per_seed(table: pd.DataFrame, weights: dict[Cell, float], columns: list[str]) -> pd.DataFrame:
    """Cell means per seed, restricted to the seeds every weighted cell has."""
    keep = table[[(a, c) in weights for a, c in zip(table["arm"], table["corruption"], strict=True)]]
    per = keep.groupby(["arm", "corruption", "seed"])[columns].mean().dropna(subset=[columns[0]]).reset_index()
    counts = per.groupby("seed").size()
    return per[per["seed"].isin(counts.index[counts == len(weights)])]


def _over_seeds(per: pd.DataFrame, weights: dict[Cell, float], value: str) -> Evidence:
    w = np.array([weights[(a, c)] for a, c in zip(per["arm"], per["corruption"], strict=True)])
    values = per.assign(_w=w * per[value]).groupby("seed")["_w"].sum()
    mean, _, low, high = stats.mean_interval(values.to_numpy())
    return Evidence(mean, low, high, len(values), f"t over {len(values)} seeds")


def drop_contrast(drops: pd.DataFrame, weights: dict[Cell, float], metric: str, measure: str = "drop") -> Evidence:
    """Effect ``sum_w w * measure(arm, corruption)`` from ``analysis.drops.relative_drops`` rows.

    Args:
        drops: ``relative_drops`` output.
        weights: (arm, corruption) -> weight.
        metric: the accuracy column the drops were computed from.
        measure: ``drop`` (the study's) or ``floor_drop`` (the floor-corrected secondary measure).
    """
    missing = missing_cells(drops, weights, measure)
    if missing:
        return Evidence(missing=missing)
    per = _per_seed(drop_terms(drops, metric, measure), weights, [measure, "x_o", "se_o", "x_c", "se_c"])
    if per.empty:
        return Evidence(missing=("a seed shared by " + ", ".join(f"{a} × {c}" for a, c in weights),))
    if per["seed"].nunique() >= 2:
        return _over_seeds(per, weights, measure)
    effect, var = 0.0, 0.0
    for arm, cells in per.groupby("arm"):  # delta method on 100 (x_o - x_c) / x_o, per arm
        w = np.array([weights[(arm, c)] for c in cells["corruption"]])
        x_o, x_c = cells["x_o"].iloc[0], cells["x_c"].to_numpy()
        effect += float((w * cells[measure]).sum())
        var += float(((w * 100 / x_o) ** 2 * cells["se_c"] ** 2).sum())
        var += float((w * 100 * x_c / x_o**2).sum() ** 2 * cells["se_o"].iloc[0] ** 2)
    return _normal(effect, var)


def gap_evidence(global_gap: Evidence, local_gap: Evidence, tolerance: float) -> Evidence:
    """The gap comes from global shuffling: the global gap above 0 *and* the local gap inside
    ±tolerance (``stats.within_verdict``). PASS when both hold, FAIL when the global gap is
    below 0 or the local gap lies entirely outside ±tolerance, else INCONCLUSIVE.

    The effect and interval are the global gap's; the local gap's are in ``interval``.
    """
    local = stats.within_verdict(local_gap.low, local_gap.high, tolerance)
    if local_gap.missing or math.isnan(local_gap.effect):
        local_text = "local gap: none"
    else:
        local_text = f"local gap {local_gap.effect:+.2f} [{local_gap.low:+.2f}, {local_gap.high:+.2f}] vs ±{tolerance:g}: {local}"
    return Evidence(
        global_gap.effect,
        global_gap.low,
        global_gap.high,
        min(global_gap.n_seeds, local_gap.n_seeds),
        f"{global_gap.interval}; {local_text}",
        tuple(dict.fromkeys(global_gap.missing + local_gap.missing)),
        stats.all_of([stats.verdict(global_gap.low, global_gap.high), local]),
    )


def seed_sd_evidence(table: pd.DataFrame, value: str, limit: float) -> Evidence:
    """Pooled standard deviation of ``value`` over seeds within each arm x corruption cell with
    two or more seeds, with its chi-square 95% interval; PASS when the upper end is at or below
    ``limit``, FAIL when the lower end is above it (``stats.below_verdict``)."""
    cells = table.dropna(subset=[value]).groupby(["arm", "corruption", "seed"])[value].mean()
    per_cell = cells.groupby(level=["arm", "corruption"]).agg(["var", "count"])
    per_cell = per_cell[per_cell["count"] >= 2]
    if per_cell.empty:
        return Evidence(missing=("two or more seeds of an arm on one corruption",))
    sd, low, high, dof = stats.pooled_sd(per_cell["var"].to_numpy(), (per_cell["count"] - 1).to_numpy())
    return Evidence(
        sd,
        low,
        high,
        int(per_cell["count"].max()),
        f"chi-square over {len(per_cell)} arm x corruption cells, {dof} df",
        decision=stats.below_verdict(low, high, limit),
    )


def value_contrast(table: pd.DataFrame, weights: dict[Cell, float], value: str, binomial: bool = False) -> Evidence:
    """Effect ``sum_w w * mean(value)`` over cells of a trial frame.

    Args:
        table: annotated trial frame.
        weights: (arm, corruption) -> weight.
        value: the column (an accuracy, uniformity, ...).
        binomial: ``value`` is an accuracy in percent, so one seed still gets an interval.
    """
    missing = missing_cells(table, weights, value)
    if missing:
        return Evidence(missing=missing)
    per = _per_seed(table, weights, [value, "n_test"])
    if per.empty:
        return Evidence(missing=("a seed shared by " + ", ".join(f"{a} × {c}" for a, c in weights),))
    if per["seed"].nunique() >= 2:
        return _over_seeds(per, weights, value)
    w = np.array([weights[(a, c)] for a, c in zip(per["arm"], per["corruption"], strict=True)])
    effect = float((w * per[value]).sum())
    if not binomial:
        return Evidence(effect, n_seeds=1, interval=f"one seed: no interval for {value}")
    return _normal(effect, float((w**2 * stats.binomial_se(per[value], per["n_test"]) ** 2).sum()))


def _normal(effect: float, var: float) -> Evidence:
    half = stats.Z * math.sqrt(var)
    if math.isnan(half):
        return Evidence(effect, n_seeds=1, interval="one seed: n_test unknown, no sampling error")
    return Evidence(effect, effect - half, effect + half, 1, "one seed: binomial sampling error")


def correlation_contrast(
    points: pd.DataFrame, metric: str, quantity: str, against: str | None = None, n_boot: int = 2000, seed: int = 0
) -> Evidence:
    """Within-method Spearman r(quantity, metric), or ``r - |r(against, metric)|`` if given.

    Args:
        points: trained trials of one family (one point each), with an ``arm`` column.
        metric: accuracy column.
        quantity: e.g. ``uniformity``.
        against: e.g. ``ece``: the effect is how much better ``quantity`` tracks accuracy.
    """
    needed = [metric, quantity] + ([against] if against else [])
    missing = [c for c in needed if c not in points or points[c].isna().all()]
    if missing:
        return Evidence(missing=tuple(f"{c} values" for c in missing))
    points = points.dropna(subset=needed)
    if points["corruption"].nunique() < 3 or len(points) < 4:
        return Evidence(missing=("three or more settings of the family (ori included) with these values",))
    ids = stats.group_ids(points["arm"].to_numpy(), len(points))
    index = np.vstack([np.arange(len(points)), stats.resample_index(ids, n_boot, seed)])
    x = points[metric].to_numpy(float)[index]

    def r(column: str) -> np.ndarray:
        return stats.row_correlation(x, points[column].to_numpy(float)[index], "spearman", ids)

    values = r(quantity) - (np.abs(r(against)) if against else 0)
    low, high = stats.percentile_interval(values[1:])
    return Evidence(float(values[0]), low, high, int(points["seed"].nunique()), f"bootstrap over {len(points)} trials")
