"""Claims about feature geometry (docs/study.md §4.5 and §4.6): C5 uniformity, C6 tracking.

Uniformity has no sampling model, so with one seed these effects have no interval
(INCONCLUSIVE); with two or more seeds a Student-t interval over seeds.
"""

from __future__ import annotations

import pandas as pd

from analysis import paper, stats
from analysis.drop_claims import PATCH_MISSING, mean_weights
from analysis.dynamics import dynamics_frame
from analysis.evidence import Evidence, check, correlation_contrast, value_contrast
from analysis.frame import CLEAN, FAMILIES, SUPERVISED, family_levels, in_family
from trainables.metrics import CLASSWISE_UNIFORMITY, ECE, UNIFORMITY

# C5.train: (quantity of analysis.dynamics, its name, the study's direction for CL, for Sup/SupCon).
TRAINING = (
    (CLASSWISE_UNIFORMITY, "class-wise uniformity", 1, -1),
    (UNIFORMITY, "overall uniformity", 1, 1),
    ("intra", "intra-class distance", 1, -1),
)
HISTORY_HINT = "eval.eval_every > 0, read with analysis.collect.histories"


def corruption_claims(df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C5.corrupt: patch shuffling lowers CL uniformity (``paper.QUOTES["C5.corrupt"]``); C5.blur:
    defocus blur lowers it less than patch shuffling (``paper.QUOTES["C5.blur"]``)."""
    patch = family_levels(df, "global") + family_levels(df, "local")
    blur = sorted(c for c in set(df["corruption"]) if str(c).startswith("defocusblur"))
    rows = []
    for cl in cls:
        ev = (
            value_contrast(df, {(cl, CLEAN): 1.0, **mean_weights(cl, patch, -1)}, UNIFORMITY)
            if patch
            else Evidence(missing=(PATCH_MISSING,))
        )
        rows.append(
            check(
                "C5.corrupt",
                f"patch shuffling lowers {cl} uniformity",
                "2.82 > 2.41-2.62",
                ev,
                UNIFORMITY,
                paper.QUOTES["C5.corrupt"],
            )
        )
    for cl in cls:
        needs = [m for m, ok in (("defocusblur_* trials", blur), (PATCH_MISSING, patch)) if not ok]
        ev = (
            Evidence(missing=tuple(needs))
            if needs
            else value_contrast(df, {**mean_weights(cl, blur), **mean_weights(cl, patch, -1)}, UNIFORMITY)
        )
        rows.append(
            check(
                "C5.blur",
                f"defocus blur lowers {cl} uniformity less than patch shuffling (the study's 'barely' is not tested)",
                "2.80 vs 2.41-2.62",
                ev,
                UNIFORMITY,
                paper.QUOTES["C5.blur"],
            )
        )
    return rows


def order_claims(df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C5.order: on clean data uniformity MoCo > Sup > SupCon (``paper.QUOTES["C5.order"]``)."""
    rows = []
    for a, b in [(cl, SUPERVISED) for cl in cls] + [(SUPERVISED, "supcon")]:
        ev = value_contrast(df, {(a, CLEAN): 1.0, (b, CLEAN): -1.0}, UNIFORMITY)
        pa, pb = paper.PAPER_UNIFORMITY.get(a), paper.PAPER_UNIFORMITY.get(b)
        at_200 = paper.PAPER_UNIFORMITY_200.get(a)
        rows.append(
            check(
                "C5.order",
                f"uniformity on ori: {a} > {b}",
                (f"{pa} > {pb}" + (f" ({a}: 800 epochs; {at_200} at 200)" if at_200 else "")) if pa and pb else "",
                ev,
                UNIFORMITY,
                paper.QUOTES["C5.order"],
            )
        )
    return rows


def training_changes(df: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """Per trained trial on ori and geometry quantity: the class-mean value at its first and
    last evaluated epoch (``analysis.dynamics``: the per-epoch history, then the final metrics).

    Returns:
        Columns ``arm``, ``seed``, ``quantity``, ``first``, ``last`` (epochs), ``change``
        (value at ``last`` minus at ``first``). The untrained reference (epoch 0) is left out:
        the check follows the training curve.
    """
    clean = df[df["corruption"] == CLEAN]
    if clean.empty or "optim.epochs" not in clean:
        return pd.DataFrame(columns=["arm", "seed", "quantity", "first", "last", "change"])
    dyn = dynamics_frame(clean, history).dropna(subset=["value"])
    curve = dyn[dyn["epoch"] > 0].groupby(["arm", "seed", "quantity", "epoch"])["value"].mean().reset_index()
    ends = (
        curve.sort_values("epoch")
        .groupby(["arm", "seed", "quantity"])
        .agg(first=("epoch", "first"), last=("epoch", "last"), start=("value", "first"), end=("value", "last"))
    )
    return ends.assign(change=ends["end"] - ends["start"]).reset_index().drop(columns=["start", "end"])


def training_evidence(changes: pd.DataFrame, arm: str, quantity: str, sign: int) -> Evidence:
    """``sign * (last - first)`` of one arm's quantity: t over seeds, or a point value for one seed."""
    mine = changes[(changes["arm"] == arm) & (changes["quantity"] == quantity)]
    if mine.empty:
        return Evidence(missing=(f"{quantity} values of {arm} × {CLEAN}",))
    mine = mine[mine["last"] > mine["first"]]
    if mine.empty:
        return Evidence(missing=(f"{quantity} at a second evaluated epoch of {arm} × {CLEAN} ({HISTORY_HINT})",))
    values = sign * mine["change"].to_numpy(float)
    epochs = (
        f"epoch {'/'.join(map(str, sorted(set(mine['first']))))} to {'/'.join(map(str, sorted(set(mine['last']))))}"
    )
    if len(values) < 2:
        return Evidence(float(values[0]), n_seeds=1, interval=f"one seed: no interval for {quantity}; {epochs}")
    mean, _, low, high = stats.mean_interval(values)
    return Evidence(mean, low, high, len(values), f"t over {len(values)} seeds; {epochs}")


def training_claims(df: pd.DataFrame, cls: list[str], history: pd.DataFrame | None) -> list[dict]:
    """C5.train (``paper.QUOTES["C5.train"]``): along the training curve on ori, from the first
    evaluated epoch to the last (not against the untrained network), class-wise uniformity and
    intra-class distance rise for CL and fall for Sup/SupCon; overall uniformity rises for all.
    Needs per-epoch geometry (``history``); without it only the final epoch is known and the
    check is INCONCLUSIVE naming the missing second epoch."""
    changes = training_changes(df, history)
    rows = []
    for arm, is_cl in [(cl, True) for cl in cls] + [(m, False) for m in (SUPERVISED, "supcon")]:
        for quantity, name, cl_sign, sl_sign in TRAINING:
            sign = cl_sign if is_cl else sl_sign
            ev = training_evidence(changes, arm, quantity, sign)
            says = "rises" if sign > 0 else "falls"
            rows.append(
                check(
                    "C5.train",
                    f"{name} {says} during training ({arm}, first to last evaluated epoch)",
                    "qualitative (Fig. A.1)",
                    ev,
                    quantity,
                    paper.QUOTES["C5.train"],
                )
            )
    return rows


def tracking_claims(df: pd.DataFrame, cls: list[str], metric: str) -> list[dict]:
    """C6: within a corruption family uniformity tracks accuracy (Spearman > 0), ECE less so
    (``paper.QUOTES["C6.unif"]``, ``paper.QUOTES["C6.ece"]``), within each CL arm: the supplement
    warns the link may not hold for supervised learning (uniformity comes from the CL objective).
    NOTE: Table C.1 is one pretrained network evaluated on corrupted data; here each point is a
    network pretrained on its corruption."""
    trained = df[df["arm"].isin(cls)]
    rows = []
    for family in FAMILIES:
        points = trained[in_family(trained, family)] if (df["family"] == family).any() else trained.iloc[:0]
        ev = (
            correlation_contrast(points, metric, UNIFORMITY) if len(points) else Evidence(missing=(f"{family} trials",))
        )
        rows.append(
            check(
                "C6.unif",
                f"{family}: uniformity rises with accuracy within each CL arm (Spearman r)",
                "Table C.1: monotone (one pretrained network on corrupted data)",
                ev,
                "r",
                paper.QUOTES["C6.unif"],
            )
        )
        ev = correlation_contrast(points, metric, UNIFORMITY, ECE) if len(points) else ev
        rows.append(
            check(
                "C6.ece",
                f"{family}: uniformity tracks accuracy better than ECE within each CL arm (r_U - |r_ECE|)",
                "Table C.1: ECE non-monotone",
                ev,
                "r",
                paper.QUOTES["C6.ece"],
            )
        )
    return rows


def geometry_claims(df: pd.DataFrame, cls: list[str], metric: str, history: pd.DataFrame | None) -> list[dict]:
    """Every C5 and C6 check."""
    return [
        *corruption_claims(df, cls),
        *order_claims(df, cls),
        *training_claims(df, cls, history),
        *tracking_claims(df, cls, metric),
    ]
