"""Feature geometry over training, per method (supplement Figure A.1).

Every evaluation (each ``eval.eval_every`` epochs) logs overall uniformity and, per class,
class-wise uniformity and intra-/inter-class squared feature distance
(``trainables.evaluation.geometry_scalars``; per-class values for up to 100 classes), so each
curve has a point per evaluation. Epoch 0 is the untrained reference (``optim.epochs == 0``)
of the same seed and corruption: every method builds its backbone first from the seed's
``init`` generator, so that trial *is* the starting point of each trained one. Without it the
curves start at the first evaluation.

    python -m analysis.dynamics --experiment grid_patch_sizes-shapes [--corruption glo_4]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from analysis import cli
from analysis.frame import UNTRAINED, annotate, arm_order, floor_keys, match_key
from trainables.metrics import (
    CLASSWISE_UNIFORMITY,
    FEATURE_DISTANCE,
    INTER_DISTANCE,
    INTRA_DISTANCE,
    UNIFORMITY,
    per_class_name,
)

COLUMNS = ["arm", "corruption", "seed", "epoch", "quantity", "cls", "value"]
OVERALL = -1  # ``cls`` of a value over all classes


def geometry(row: pd.Series) -> list[tuple[str, int, float]]:
    """(quantity, class, value) of one trial's final feature geometry.

    ``uniformity`` (overall), ``classwise_uniformity`` per class, ``intra`` (class c's mean
    squared distance within itself) and ``inter`` (its mean distance to the other classes), as the
    trial logged them (``intra_distance/<c>``, ``inter_distance/<c>``: ``geometry_scalars``); from
    the class x class matrix ``feature_distance`` only where they were not logged (over 100
    classes, or trials recorded before).
    """
    out = []
    if not pd.isna(row.get(UNIFORMITY)):
        out.append((UNIFORMITY, OVERALL, float(row[UNIFORMITY])))
    if isinstance(row.get(CLASSWISE_UNIFORMITY), list):
        out += [(CLASSWISE_UNIFORMITY, c, float(v)) for c, v in enumerate(row[CLASSWISE_UNIFORMITY])]
    logged = {q: _per_class(row, name) for q, name in (("intra", INTRA_DISTANCE), ("inter", INTER_DISTANCE))}
    if all(logged.values()):
        out += [(q, c, v) for q, values in logged.items() for c, v in values]
    elif isinstance(row.get(FEATURE_DISTANCE), list):
        d = np.asarray(row[FEATURE_DISTANCE], dtype=float)
        off = d.copy()
        np.fill_diagonal(off, np.nan)
        out += [("intra", c, float(v)) for c, v in enumerate(np.diag(d))]
        out += [("inter", c, float(v)) for c, v in enumerate(np.nanmean(off, axis=1))]
    return out


def _per_class(row: pd.Series, name: str) -> list[tuple[int, float]]:
    """``(class, value)`` of a row's logged ``<name>/<class>`` columns (NaN ones skipped)."""
    return sorted(
        (int(k.partition("/")[2]), float(v))
        for k, v in row.items()
        if isinstance(k, str) and per_class_name(k) == name and not pd.isna(v)
    )


def dynamics_frame(df: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table (``COLUMNS``) of geometry over epochs for every trained trial.

    Args:
        df: trial frame (``analysis.collect``); needs ``optim.epochs``.
        history: per-epoch metrics (``analysis.collect.histories``: ``run_id``/``trial_id``,
            ``epoch``, ``metric``, ``value``); its ``uniformity`` rows give the curve between
            epoch 0 and the end.

    Returns:
        One row per (trial, epoch, quantity, class).
    """
    df = annotate(df)
    trained, untrained = df[df["arm"] != UNTRAINED], df[df["arm"] == UNTRAINED]
    keys = floor_keys(df)  # the untrained trial of the same seed, corruption and network
    starts = dict(zip(match_key(untrained, keys), (r for _, r in untrained.iterrows()), strict=True))
    rows = []
    for (_, trial), key in zip(trained.iterrows(), match_key(trained, keys), strict=True):
        ident = (trial["arm"], trial["corruption"], trial["seed"])
        start = starts.get(key)
        if start is not None:
            rows += [(*ident, 0, q, c, v) for q, c, v in geometry(start)]
        rows += [(*ident, int(trial["optim.epochs"]), q, c, v) for q, c, v in geometry(trial)]
        rows += [(*ident, e, q, c, v) for e, q, c, v in _history(trial, history)]
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.drop_duplicates(["arm", "corruption", "seed", "epoch", "quantity", "cls"]).sort_values(COLUMNS[:6])


# Per-epoch metric -> (quantity, class) of the long table; per-class keys are "<name>/<class>".
HISTORY_KEYS = (UNIFORMITY, "classwise_uniformity/", "intra_distance/", "inter_distance/")
_QUANTITY = {
    UNIFORMITY: UNIFORMITY,
    CLASSWISE_UNIFORMITY: CLASSWISE_UNIFORMITY,
    INTRA_DISTANCE: "intra",
    INTER_DISTANCE: "inter",
}


def _history(trial: pd.Series, history: pd.DataFrame | None) -> list[tuple[int, str, int, float]]:
    """(epoch, quantity, class, value) of one trial's logged per-epoch geometry."""
    if history is None or history.empty:
        return []
    ident = "run_id" if isinstance(trial.get("run_id"), str) else "trial_id"
    mine = history[history[ident] == trial.get(ident)]
    out = []
    for e, metric, v in zip(mine["epoch"], mine["metric"], mine["value"], strict=True):
        name, _, cls = metric.partition("/")
        if name in _QUANTITY and (cls.isdigit() or (not cls and name == UNIFORMITY)):
            out.append((int(e), _QUANTITY[name], int(cls) if cls else OVERALL, float(v)))
    return out


def dynamics_figure(dyn: pd.DataFrame, corruption: str = "ori"):
    """Figure A.1 style, one column per method: top, overall uniformity (black squares) and
    class-wise uniformity (dashed, one line per class); bottom, intra- and inter-class
    squared distance (mean over classes, shaded min-max over classes). Mean over seeds."""
    from analysis.figures import plt

    dyn = dyn[dyn["corruption"] == corruption]
    arms = arm_order(dyn["arm"]) or ["(none)"]
    fig, axes = plt.subplots(2, len(arms), figsize=(3.2 * len(arms), 5.0), squeeze=False, sharex="col")
    for j, arm in enumerate(arms):
        mine = dyn[dyn["arm"] == arm].groupby(["epoch", "quantity", "cls"])["value"].mean().reset_index()
        top, bottom = axes[0, j], axes[1, j]
        for c, curve in mine[mine["quantity"] == CLASSWISE_UNIFORMITY].groupby("cls"):
            top.plot(curve["epoch"], curve["value"], "--", linewidth=0.8, color=f"C{int(c) % 10}", alpha=0.8)
        overall = mine[mine["quantity"] == UNIFORMITY]
        top.plot(overall["epoch"], overall["value"], "-s", color="black", markersize=4, label="overall")
        for quantity, color in (("intra", "C3"), ("inter", "C0")):
            part = mine[mine["quantity"] == quantity].groupby("epoch")["value"]
            stats = part.agg(["mean", "min", "max"]).reset_index()
            bottom.plot(stats["epoch"], stats["mean"], "-o", color=color, markersize=3, label=f"{quantity}-class")
            bottom.fill_between(stats["epoch"], stats["min"], stats["max"], color=color, alpha=0.15)
        top.set_title(f"{arm} ({corruption})", fontsize=9)
        top.set_ylabel("uniformity (dashed: per class)", fontsize=8)
        bottom.set_ylabel("squared feature distance", fontsize=8)
        bottom.set_xlabel("epoch", fontsize=8)
        for ax in (top, bottom):
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, frameon=False)
    axes[1, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """CLI: write the dynamics table (CSV) and figure for one corruption."""
    p = cli.parser(__doc__)
    p.add_argument("--corruption", default="ori", help="which trials to plot (default: %(default)s)")
    return cli.run(_main, p.parse_args(argv))


def _main(args) -> None:
    from analysis import collect, figures

    df, source = cli.load(args)
    dyn = dynamics_frame(df, collect.histories(df, HISTORY_KEYS, source.uri))
    dyn.to_csv(source.out / "dynamics.csv", index=False)
    figures.save(dynamics_figure(dyn, args.corruption), source.out / f"dynamics_{args.corruption}.png")
    print(f"written: {source.out}/dynamics.csv, dynamics_{args.corruption}.png")


if __name__ == "__main__":
    sys.exit(main())
