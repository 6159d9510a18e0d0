"""Accuracy and accuracy-drop tables: pure functions of a trial frame (see ``analysis.frame``).

The drop is the study's relative drop ``100 * (A_ori - A_c) / A_ori`` (docs/study.md §2.4), each
corrupted trial matched with the clean (``ori``) trial of the same method, dataset, budget and
seed. Trials with ``optim.epochs == 0`` form the ``untrained`` row: the backbone at
initialisation, evaluated the same way on the same corrupted data (the floor a method that
learned little sits on). Spreads: with two or more seeds the std over seeds and a Student-t
95% interval; with one seed the binomial sampling error of each accuracy over the evaluated
test images, propagated to the drop (delta method) and a normal 95% interval.

A pre-declared secondary measure (issue 22, the weak-learner confound) is reported beside the
study's, never instead of it: the floor-corrected drop, the share of the gain over the untrained
network that the corruption takes away,
``100 * ((A_ori - F_ori) - (A_c - F_c)) / (A_ori - F_ori)``, with F the untrained trial's
accuracy of the same seed, corruption and network (``analysis.frame.floor_keys``). It is
undefined (NaN) without that trial, and where the arm did not beat the floor on ori.

Cells inside the floor's error are marked ``[floor]`` in every table (``at_floor`` in the CSVs):
an accuracy whose gain over the untrained network of the same seed and corruption, ``A - F``, has
a 95% interval that does not clear zero (``floor_gaps``), and a drop either of whose accuracies
(ori or the corruption) is such a cell. A drop there measures a learner that learned nothing
measurable, not what the corruption does to one that did: it is not a finding.

    python -m analysis.drops --experiment grid_patch_sizes-shapes [--metric probe_acc] [--out DIR]
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from analysis import cli, stats
from analysis.frame import (
    CLEAN,
    UNTRAINED,
    AnalysisError,
    annotate,
    arm_order,
    budget_keys,
    describe,
    floor_keys,
    match_key,
    n_test,
)
from trainables.metrics import KNN_ACC

# spread: std over seeds (n_seeds >= 2) or the binomial sampling error (one seed); low/high: its
# 95% interval; sampling_se: the binomial error of the mean, whatever the number of seeds.
# at_floor: the cell is inside the untrained floor's error (see ``floor_gaps``); marked FLOOR_MARK in tables.
SUMMARY_COLUMNS = [
    "arm",
    "corruption",
    "n_seeds",
    "mean",
    "spread",
    "spread_kind",
    "low",
    "high",
    "sampling_se",
    "at_floor",
]
FLOOR_MARK = "[floor]"
AT_FLOOR_NOTE = (
    f"{FLOOR_MARK}: inside the untrained floor's error, not a finding: the arm's accuracy there (for a "
    "drop, on ori or on the corruption) is not above the untrained network's of the same seed and "
    "corruption (the 95% interval of A - F reaches 0)."
)
# The study's measure first; the floor-corrected drop is the secondary one (titles of the tables).
MEASURES = {
    "drop": "Relative drop vs ori (%), 100 (A_ori - A_c) / A_ori",
    "floor_drop": "Floor-corrected drop (%, secondary measure), 100 ((A_ori - F_ori) - (A_c - F_c)) / (A_ori - F_ori)",
}
FLOOR_NOTE = (
    "F: the untrained network (optim.epochs = 0) of the same seed and corruption, evaluated the same way. "
    "The share of what a method learned above that floor that the corruption removes; a weak learner "
    "sitting near the floor can show a small relative drop by having little to lose. Secondary to the "
    "study's measure above, which stays the primary one."
)
NO_FLOOR = (
    "No floor-corrected drop: it needs finished untrained trials (optim.epochs = 0) on ori and on the "
    "corruptions with the same seeds (a sweep adds them with `include_untrained: true` in its YAML)."
)
TRIAL_COLUMNS = ["arm", "method", "corruption", "seed", "clean", "floor_clean", "floor", "drop", "floor_drop"]


def corruption_order(specs) -> list[str]:
    """``ori`` first, then by kind and parameter (glo_2, glo_4, ..., loc_2, ..., gam_0.1, ...)."""

    def key(spec: str):
        kind, _, level = describe(spec)
        return (spec != "ori", kind, 0.0 if math.isnan(level) else level)

    return sorted(set(specs), key=key)


def accuracy_table(df: pd.DataFrame, metric: str = KNN_ACC) -> pd.DataFrame:
    """arm x corruption table of the metric's mean over seeds (``untrained`` last)."""
    df = annotate(df)
    table = df.pivot_table(index="arm", columns="corruption", values=metric, aggfunc="mean")
    return table.loc[arm_order(table.index), corruption_order(table.columns)]


def relative_drops(df: pd.DataFrame, metric: str = KNN_ACC) -> pd.DataFrame:
    """One row per corrupted trial with its matched clean accuracy and both drops (%).

    Args:
        df: trial frame with ``method``, ``corruption``, ``seed`` and ``metric`` (and any flat
            config columns, which must agree between the two trials of a pair; so an ``@n`` arm's
            corrupted trial pairs with its own clean trial, which shares ``data.labels_per_class``).
        metric: accuracy column in percent.

    Returns:
        The corrupted trials (annotated) with ``clean``, ``clean_n_test``, ``drop``; and from the
        untrained trials ``floor`` (F_c), ``floor_clean`` (F_ori), their ``*_n_test``, and
        ``floor_drop`` (NaN without them, for the untrained arm itself, and where A_ori <= F_ori).
    """
    df = annotate(df).dropna(subset=[metric])
    if df.empty:
        columns = (
            "clean",
            "clean_n_test",
            "drop",
            "floor",
            "floor_n_test",
            "floor_clean",
            "floor_clean_n_test",
            "floor_drop",
        )
        return df.assign(**{c: pd.Series(dtype=float) for c in columns})
    df["_match"] = match_key(df, [*budget_keys(df), "seed"])
    clean = df[df.corruption == CLEAN][["_match", metric, "n_test"]]
    clean = clean.rename(columns={metric: "clean", "n_test": "clean_n_test"})
    merged = df[df.corruption != CLEAN].merge(clean, on="_match", how="inner").drop(columns="_match")
    merged["drop"] = 100 * (merged["clean"] - merged[metric]) / merged["clean"]
    return _with_floor(merged, df, metric)


def _with_floor(merged: pd.DataFrame, df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Adds the untrained trial's accuracy on the trial's corruption and on ori, and ``floor_drop``."""
    own, at_clean = _floor_of(merged, df, metric), _floor_of(merged.assign(corruption=CLEAN), df, metric)
    out = merged.assign(floor=own[0], floor_n_test=own[1], floor_clean=at_clean[0], floor_clean_n_test=at_clean[1])
    gain = (out["clean"] - out["floor_clean"]).astype(float)
    floor_drop = 100 * (gain - (out[metric] - out["floor"])) / gain
    out["floor_drop"] = floor_drop.where((gain > 0) & (out["arm"] != UNTRAINED))
    return out


def _floor_of(rows: pd.DataFrame, df: pd.DataFrame, metric: str) -> tuple[pd.Series, pd.Series]:
    """The untrained trial's metric and n_test for each row (NaN where ``df`` has none)."""
    keys = floor_keys(df)  # corruption, seed, dataset, network and evaluation: not the method
    untrained = df[df["arm"] == UNTRAINED]
    floors = untrained.assign(_key=match_key(untrained, keys)).drop_duplicates("_key").set_index("_key")
    key = match_key(rows, keys)
    return key.map(floors[metric]), key.map(floors["n_test"])


def floor_gaps(df: pd.DataFrame, metric: str = KNN_ACC) -> pd.DataFrame:
    """Per trained arm x corruption: the gain over the untrained network, ``A - F`` (points).

    Summarised like any cell (``SUMMARY_COLUMNS``): with two or more seeds the t-interval over
    seeds, with one the binomial errors of A and F in quadrature. ``at_floor``: the interval's
    lower end is not above 0. Cells without an untrained trial to compare with are left out.
    """
    df = annotate(df).dropna(subset=[metric])
    trained = df[df["arm"] != UNTRAINED]
    floor, floor_n = _floor_of(trained, df, metric)
    trained = trained.assign(
        gap=trained[metric] - floor,
        se=np.hypot(stats.binomial_se(trained[metric], trained["n_test"]), stats.binomial_se(floor, floor_n)),
    )
    rows = []
    for (arm, corruption), cell in trained.dropna(subset=["gap"]).groupby(["arm", "corruption"]):
        per_seed = cell.groupby("seed")["gap"].mean()
        se = float(np.sqrt((cell["se"] ** 2).mean() / len(cell)))
        rows.append(
            _seed_row(arm, corruption, per_seed.to_numpy(), se)
            if len(per_seed) >= 2
            else _binomial_row(arm, corruption, float(per_seed.iloc[0]), se)
        )
    gaps = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    gaps["at_floor"] = ~(gaps["low"] > 0)  # a NaN interval (one seed left of two) is not cleared either
    return _sorted(gaps) if len(gaps) else gaps


def floor_cells(df: pd.DataFrame, metric: str) -> set[tuple[str, str]]:
    """(arm, corruption) cells inside the untrained floor's error."""
    gaps = floor_gaps(df, metric)
    return set(zip(gaps.loc[gaps["at_floor"], "arm"], gaps.loc[gaps["at_floor"], "corruption"], strict=True))


def drop_terms(drops: pd.DataFrame, metric: str, measure: str = "drop") -> pd.DataFrame:
    """The two accuracies a drop compares and their binomial errors, per corrupted trial.

    Both measures are ``100 (x_o - x_c) / x_o``: for ``drop`` x = A; for ``floor_drop`` x = A - F
    (errors of A and F added in quadrature, as if independent: they are measured on the same
    test images, so this errs on the wide side).

    Returns:
        ``drops`` with ``x_o``, ``se_o``, ``x_c``, ``se_c``.
    """
    if measure not in MEASURES:
        raise AnalysisError(f"unknown drop measure {measure!r}; valid: {', '.join(MEASURES)}")
    se = stats.binomial_se
    x_o, se_o = drops["clean"], se(drops["clean"], drops["clean_n_test"])
    x_c, se_c = drops[metric], se(drops[metric], drops["n_test"])
    if measure == "floor_drop":
        x_o, se_o = x_o - drops["floor_clean"], np.hypot(se_o, se(drops["floor_clean"], drops["floor_clean_n_test"]))
        x_c, se_c = x_c - drops["floor"], np.hypot(se_c, se(drops["floor"], drops["floor_n_test"]))
    return drops.assign(x_o=x_o, se_o=se_o, x_c=x_c, se_c=se_c)


def drop_table(df: pd.DataFrame, metric: str = KNN_ACC, measure: str = "drop") -> pd.DataFrame | None:
    """arm x corruption mean drop (%) with an ``Avg`` column; None without any (e.g. no ori trials)."""
    drops = relative_drops(df, metric).dropna(subset=[measure])
    if drops.empty:
        return None
    table = drops.pivot_table(index="arm", columns="corruption", values=measure, aggfunc="mean")
    table = table.loc[arm_order(table.index), corruption_order(table.columns)]
    table["Avg"] = table.mean(axis=1)
    return table


def require_clean(df: pd.DataFrame, experiment: str = "this sweep") -> None:
    """Raise AnalysisError if no clean (``ori``) trial exists to compare against."""
    found = sorted(set(annotate(df)["corruption"])) if len(df) else []
    if CLEAN not in found:
        raise AnalysisError(
            f"experiment {experiment!r} has no clean (ori) trial to compare against; "
            f"corruptions found: {', '.join(found) or 'none'}"
        )


def accuracy_summary(df: pd.DataFrame, metric: str = KNN_ACC) -> pd.DataFrame:
    """Long table (``SUMMARY_COLUMNS``) of accuracy per arm x corruption with its spread."""
    df = annotate(df).dropna(subset=[metric])
    rows = []
    for (arm, corruption), cell in df.groupby(["arm", "corruption"]):
        per_seed = cell.groupby("seed")[metric].mean()
        se = float(stats.binomial_se(cell[metric].mean(), n_test(cell).mean()))
        if len(per_seed) >= 2:
            rows.append(_seed_row(arm, corruption, per_seed.to_numpy(), se))
        else:
            rows.append(_binomial_row(arm, corruption, float(cell[metric].mean()), se))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    at_floor = floor_cells(df, metric)
    summary["at_floor"] = [(a, c) in at_floor for a, c in zip(summary["arm"], summary["corruption"], strict=True)]
    return _sorted(summary)


def drop_summary(df: pd.DataFrame, metric: str = KNN_ACC, measure: str = "drop") -> pd.DataFrame:
    """Long table (``SUMMARY_COLUMNS``) of a drop measure per arm x corruption, plus ``Avg``.

    Args:
        measure: ``drop`` (the study's) or ``floor_drop`` (the secondary measure; cells without
            the untrained reference are left out).

    ``Avg`` is, per seed, the mean drop over the arm's corruptions (seeds missing one are left
    out), then summarised like any cell. ``at_floor``: the arm is inside the untrained floor's
    error on ori or on the corruption (for ``Avg``: on any of them).
    """
    drops = drop_terms(relative_drops(df, metric), metric, measure).dropna(subset=[measure])
    at_floor = floor_cells(df, metric)
    rows = []
    for arm, cells in drops.groupby("arm"):
        marked = [(arm, CLEAN) in at_floor or (arm, c) in at_floor for c in sorted(set(cells["corruption"]))]
        for (corruption, cell), floor in zip(cells.groupby("corruption"), marked, strict=True):
            rows.append({**_drop_row(arm, corruption, cell, measure), "at_floor": floor})
        rows.append(
            {**_drop_row(arm, "Avg", _average_over_corruptions(cells, measure), measure), "at_floor": any(marked)}
        )
    return _sorted(pd.DataFrame(rows, columns=SUMMARY_COLUMNS))


def _average_over_corruptions(cells: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per seed: mean drop, mean corrupted term and its error over the arm's corruptions."""
    wanted = cells["corruption"].nunique()
    per = cells.groupby("seed").agg(
        value=(measure, "mean"),
        x_c=("x_c", "mean"),
        x_o=("x_o", "first"),
        se_o=("se_o", "first"),
        k=(measure, "size"),
        se_c=("se_c", lambda s: math.sqrt((s**2).sum()) / len(s)),
    )
    return per[per["k"] == wanted].reset_index().rename(columns={"value": measure})


def _drop_row(arm: str, corruption: str, cell: pd.DataFrame, measure: str) -> dict:
    if cell.empty:
        return _binomial_row(arm, corruption, math.nan, math.nan)
    se = stats.drop_se(cell["x_o"].mean(), cell["se_o"].mean(), cell["x_c"].mean(), cell["se_c"].mean())
    per_seed = cell.groupby("seed")[measure].mean()
    if len(per_seed) >= 2:
        return _seed_row(arm, corruption, per_seed.to_numpy(), se)
    return _binomial_row(arm, corruption, float(cell[measure].mean()), se)


def _seed_row(arm: str, corruption: str, values: np.ndarray, sampling_se: float) -> dict:
    mean, std, low, high = stats.mean_interval(values)
    return dict(
        arm=arm,
        corruption=corruption,
        n_seeds=len(values),
        mean=mean,
        spread=std,
        spread_kind="std",
        low=low,
        high=high,
        sampling_se=sampling_se,
        at_floor=False,
    )


def _binomial_row(arm: str, corruption: str, value: float, se: float) -> dict:
    return dict(
        arm=arm,
        corruption=corruption,
        n_seeds=1,
        mean=value,
        spread=se,
        spread_kind="binomial",
        low=value - stats.Z * se,
        high=value + stats.Z * se,
        sampling_se=se,
        at_floor=False,
    )


def _sorted(summary: pd.DataFrame) -> pd.DataFrame:
    arms = {a: i for i, a in enumerate(arm_order(summary["arm"]))}
    columns = [c for c in summary["corruption"].unique() if c != "Avg"]
    cols = {c: i for i, c in enumerate([*corruption_order(columns), "Avg"])}
    order = summary["arm"].map(arms) * 1000 + summary["corruption"].map(cols)
    return summary.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def wide(summary: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """arm x corruption table of ``mean ± spread`` strings (``±`` std or binomial error), a cell
    inside the untrained floor's error followed by ``FLOOR_MARK``."""
    floor = summary["at_floor"] if "at_floor" in summary else pd.Series(False, index=summary.index)
    text = summary.apply(lambda r: _cell_text(r["mean"], r["spread"], digits), axis=1)
    text = text.where(~floor.fillna(False).astype(bool), text + f" {FLOOR_MARK}")
    table = summary.assign(text=text).pivot(index="arm", columns="corruption", values="text")
    columns = list(dict.fromkeys(summary["corruption"]))
    return table.loc[list(dict.fromkeys(summary["arm"])), columns].fillna("")


def _cell_text(mean: float, spread: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if not math.isnan(spread) else "")


def spread_note(summary: pd.DataFrame, reference: bool = True) -> str:
    """One sentence saying what the ± means in a summary table (and, with ``reference``, whether
    the untrained reference is in it)."""
    kinds = set(summary["spread_kind"])
    seeds = sorted(set(summary["n_seeds"]))
    parts = []
    if "std" in kinds:
        parts.append(
            f"± std over seeds ({'/'.join(map(str, seeds))} seeds; 95% intervals and the binomial "
            "sampling error in the CSV)"
        )
    if "binomial" in kinds:
        parts.append("± binomial sampling error over the test images (one seed)")
    if "at_floor" in summary and summary["at_floor"].fillna(False).astype(bool).any():
        parts.append(AT_FLOOR_NOTE.rstrip("."))
    if not reference:
        return "; ".join(parts) + "."
    if UNTRAINED in set(summary["arm"]):
        reference = f"`{UNTRAINED}`: the backbone at initialisation (optim.epochs = 0), evaluated the same way."
    else:
        reference = (
            "No untrained reference here: it needs finished untrained trials on ori and the corruptions "
            "(a sweep adds them with `include_untrained: true` in its YAML)."
        )
    return "; ".join(parts) + ". " + reference


def markdown(table: pd.DataFrame, index_name: str = "") -> str:
    """A DataFrame of strings/numbers as a GitHub Markdown table."""
    header = [index_name or table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx), *(str(v) for v in row)]) + " |")
    return "\n".join(lines)


def drop_figure(summary: pd.DataFrame, metric: str = KNN_ACC):
    """Grouped bars in the style of the study's Table 1 figure: one group per corruption
    (and Avg), one bar per arm, error bars = the table's spread, values printed on the bars."""
    from analysis.figures import arm_color, plt  # matplotlib only when drawing

    arms, columns = list(dict.fromkeys(summary["arm"])), list(dict.fromkeys(summary["corruption"]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(arms) * len(columns), 3.4))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        rows = summary[summary["arm"] == arm].set_index("corruption").reindex(columns)
        x = np.arange(len(columns)) + (i - (len(arms) - 1) / 2) * width
        bars = ax.bar(
            x,
            rows["mean"],
            width,
            yerr=rows["spread"].fillna(0),
            capsize=2,
            error_kw={"elinewidth": 0.8, "ecolor": "0.3"},
            label=arm,
            color=arm_color(arm, arms),
            hatch="//" if arm == UNTRAINED else None,
            edgecolor="black",
            linewidth=0.4,
        )
        ax.bar_label(
            bars, labels=[f"{v:.1f}" if not math.isnan(v) else "" for v in rows["mean"]], fontsize=6, padding=1
        )
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(f"relative drop of {metric} (%)")
    ax.legend(fontsize=7, ncols=min(len(arms), 4), frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """CLI: print the accuracy table, the study's drop table and the floor-corrected one; write
    them as Markdown and CSV (``drops.csv``, ``floor_drops.csv``; per trial ``trial_drops.csv``
    with columns ``drop`` and ``floor_drop``), and the chart."""
    return cli.run(_main, cli.parser(__doc__, metric=True).parse_args(argv))


def floor_text(summary: pd.DataFrame) -> str:
    """The Markdown section body of the floor-corrected drop: its table and what F is, or why it is absent."""
    if summary.empty:
        return NO_FLOOR
    return f"{markdown(wide(summary), 'arm')}\n\n{spread_note(summary, reference=False)} {FLOOR_NOTE}"


def trial_drops(df: pd.DataFrame, metric: str = KNN_ACC) -> pd.DataFrame:
    """Per corrupted trial: the accuracies (A, F) and both measures, ``drop`` and ``floor_drop``."""
    drops = relative_drops(df, metric)
    return drops[[*TRIAL_COLUMNS[:4], metric, *TRIAL_COLUMNS[4:]]].sort_values(TRIAL_COLUMNS[:4])


def _main(args) -> None:
    from analysis import figures

    df, source = cli.load(args, need_clean=True)
    acc, drops = accuracy_summary(df, args.metric), drop_summary(df, args.metric)
    floors = drop_summary(df, args.metric, "floor_drop")
    text = (
        f"# {args.experiment}: {args.metric}\n\n## Accuracy (%)\n\n{markdown(wide(acc), 'arm')}\n\n"
        f"{spread_note(acc)}\n\n"
        f"## {MEASURES['drop']}\n\n{markdown(wide(drops), 'arm')}\n\n{spread_note(drops)}\n\n"
        f"## {MEASURES['floor_drop']}\n\n{floor_text(floors)}\n"
    )
    out = source.out
    (out / "drops.md").write_text(text)
    acc.to_csv(out / "accuracy.csv", index=False)
    drops.to_csv(out / "drops.csv", index=False)
    floors.to_csv(out / "floor_drops.csv", index=False)
    trial_drops(df, args.metric).to_csv(out / "trial_drops.csv", index=False)
    figures.save(drop_figure(drops, args.metric), out / "drops.png")
    print(text + f"\nwritten: {out}/drops.md, accuracy.csv, drops.csv, floor_drops.csv, trial_drops.csv, drops.png")


if __name__ == "__main__":
    sys.exit(main())
