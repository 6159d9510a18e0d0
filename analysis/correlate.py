"""Does feature uniformity (or ECE) track accuracy across corruptions? (supplement Table C.1)

Each trained trial is one point (accuracy, uniformity). Within each corruption family (global,
local, gamma; ``ori`` belongs to every family as its identity setting) and over all trials,
Pearson and Spearman r with 95% percentile-bootstrap intervals, per method and pooled within
methods (each method centred, so methods whose uniformity sits on different scales do not
make a correlation of their own). The untrained reference is left out: it learned nothing.

    python -m analysis.correlate --experiment grid_patch_sizes-shapes [--metric probe_acc]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from analysis import cli, stats
from analysis.drops import markdown
from analysis.frame import FAMILIES, UNTRAINED, annotate, arm_order, in_family
from trainables.metrics import ECE, KNN_ACC, UNIFORMITY

POOLED = "all (within method)"
QUANTITIES = (UNIFORMITY, ECE)
COLUMNS = [
    "quantity",
    "family",
    "arm",
    "n",
    "pearson",
    "pearson_low",
    "pearson_high",
    "spearman",
    "spearman_low",
    "spearman_high",
]


def families_present(df: pd.DataFrame) -> list[str]:
    """Families with at least one corrupted trial, then ``all``."""
    return [f for f in FAMILIES if (df["family"] == f).any()] + ["all"]


def correlation_table(
    df: pd.DataFrame, metric: str = KNN_ACC, quantities=QUANTITIES, n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """Correlation of each quantity with ``metric`` per family x (method, pooled).

    Args:
        df: trial frame; rows without the quantity or the metric are skipped.
        metric: accuracy column.
        quantities: columns to correlate with the accuracy.
        n_boot: bootstrap resamples per interval.
        seed: bootstrap seed.

    Returns:
        ``COLUMNS``; r is NaN where fewer than 3 points or a constant variable.
    """
    df = annotate(df)
    df = df[df["arm"] != UNTRAINED]
    rows = []
    for quantity in [q for q in quantities if q in df]:
        data = df.dropna(subset=[quantity, metric])
        for family in families_present(df):
            part = data[in_family(data, family)]
            groups = [(arm, part[part["arm"] == arm]) for arm in arm_order(part["arm"])]
            if len(groups) > 1:
                groups.append((POOLED, part))
            for arm, points in groups:
                rows.append(_row(quantity, family, arm, points, metric, n_boot, seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(quantity: str, family: str, arm: str, points: pd.DataFrame, metric: str, n_boot: int, seed: int) -> dict:
    x, y = points[metric].to_numpy(float), points[quantity].to_numpy(float)
    groups = points["arm"].to_numpy()
    row = {"quantity": quantity, "family": family, "arm": arm, "n": len(points)}
    for kind in ("pearson", "spearman"):
        r, low, high = stats.bootstrap_correlation(x, y, kind, groups, n_boot=n_boot, seed=seed)
        row.update({kind: r, f"{kind}_low": low, f"{kind}_high": high})
    return row


def formatted(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """The table with ``r [low, high]`` strings, for Markdown and HTML."""

    def cell(r, low, high):
        if np.isnan(r):
            return "–"
        return f"{r:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if not np.isnan(low) else "")

    out = table[["quantity", "family", "arm", "n"]].copy()
    for kind in ("pearson", "spearman"):
        out[kind] = [cell(*v) for v in table[[kind, f"{kind}_low", f"{kind}_high"]].to_numpy()]
    return out


def scatter_figure(df: pd.DataFrame, metric: str = KNN_ACC, quantities=QUANTITIES):
    """One panel per quantity x family: accuracy vs quantity, a colour per method, a line
    through each method's corruption levels, points labelled with the corruption."""
    from analysis.figures import arm_color, plt

    df = annotate(df)
    df = df[df["arm"] != UNTRAINED]
    quantities = [q for q in quantities if q in df and df[q].notna().any()]
    families = families_present(df)[:-1] or ["all"]
    fig, axes = plt.subplots(
        len(quantities), len(families), figsize=(3.4 * len(families), 2.9 * len(quantities)), squeeze=False
    )
    arms = arm_order(df["arm"])
    for i, quantity in enumerate(quantities):
        for j, family in enumerate(families):
            ax = axes[i, j]
            part = df[in_family(df, family)]
            cells = part.groupby(["arm", "corruption", "level"], dropna=False)[[metric, quantity]].mean().reset_index()
            for arm in arms:
                mine = part[part["arm"] == arm]
                ax.scatter(mine[metric], mine[quantity], s=12, alpha=0.5, color=arm_color(arm, arms), label=arm)
                means = cells[cells["arm"] == arm].sort_values(metric)
                ax.plot(means[metric], means[quantity], color=arm_color(arm, arms), linewidth=0.8)
                for _, c in means.iterrows():
                    ax.annotate(c["corruption"], (c[metric], c[quantity]), fontsize=6, alpha=0.8)
            ax.set_title(f"{family}", fontsize=9)
            ax.set_xlabel(f"{metric} (%)", fontsize=8)
            ax.set_ylabel(quantity, fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """CLI: print the correlation table; write it as Markdown and CSV, and the scatter plot."""
    return cli.run(_main, cli.parser(__doc__, metric=True).parse_args(argv))


def _main(args) -> None:
    from analysis import figures

    df, source = cli.load(args)
    table = correlation_table(df, args.metric)
    text = (
        f"# {args.experiment}: uniformity / ECE vs {args.metric}\n\n{markdown(formatted(table).set_index('quantity'))}\n\n"
        "r [95% bootstrap interval]; one point per trained trial; ori counts in every family.\n"
    )
    (source.out / "correlate.md").write_text(text)
    table.to_csv(source.out / "correlate.csv", index=False)
    figures.save(scatter_figure(df, args.metric), source.out / "correlate.png")
    print(text + f"\nwritten: {source.out}/correlate.md, correlate.csv, correlate.png")


if __name__ == "__main__":
    sys.exit(main())
