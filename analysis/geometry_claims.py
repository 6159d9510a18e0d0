"""Claims about feature geometry (docs/study.md §4.5 and §4.6): C5 uniformity, C6 tracking.

Uniformity has no sampling model, so with one seed these effects have no interval
(INCONCLUSIVE); with two or more seeds a Student-t interval over seeds.
"""

from __future__ import annotations

import pandas as pd

from analysis import paper, stats
from analysis.drop_claims import EXT, PATCH_MISSING, TABLE1_MISSING, table1_levels
from analysis.dynamics import OVERALL, dynamics_frame
from analysis.evidence import Evidence, check, correlation_contrast, value_contrast, weakest
from analysis.frame import CLEAN, FAMILIES, SUPERVISED, in_family
from trainables.metrics import CLASSWISE_UNIFORMITY, ECE, UNIFORMITY

# C5.train: (quantity of analysis.dynamics, its name, the class that decides, the study's direction
# for CL, for Sup/SupCon). EVERY_CLASS: Fig. A.1 draws a line per class, each moving the study's
# way, so every class must (the weakest decides). Intra-class distance: Fig. A.1's lower panel
# (supplement §A.2) plots d(f_t, D_0, D_0), class 0's spread (the dataset's first class), so class 0
# decides, as in the study.
EVERY_CLASS = None
TRAINING = (
    (CLASSWISE_UNIFORMITY, "class-wise uniformity", EVERY_CLASS, 1, -1),
    (UNIFORMITY, "overall uniformity", OVERALL, 1, 1),
    ("intra", "intra-class distance", 0, 1, -1),
)
HISTORY_HINT = "eval.eval_every > 0, read with analysis.collect.histories"


def corruption_claims(df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C5.corrupt: patch shuffling lowers CL uniformity (``paper.QUOTES["C5.corrupt"]``) at every one
    of Table 1's levels the sweep ran (the teaser lowers it at each: 2.82 -> 2.41-2.62), so the
    weakest level decides; ``C5.corrupt.ext`` the same on every patch shuffle when the sweep ran
    others. C5.blur: defocus blur lowers it less than each of those levels (``paper.QUOTES["C5.blur"]``)."""
    study, every = table1_levels(df)
    blur = sorted(c for c in set(df["corruption"]) if str(c).startswith("defocusblur"))
    rows = []
    for at in (study, every) if every else (study,):
        patch = [*at.glo, *at.loc]
        cid = "C5.corrupt" + (EXT if at.ext else "")
        for cl in cls:
            ev = (
                _every_level(df, patch, lambda c, cl=cl: {(cl, CLEAN): 1.0, (cl, c): -1.0})
                if patch
                else Evidence(missing=(PATCH_MISSING if at.ext else TABLE1_MISSING,))
            )
            paper_text = f"2.82 > {_teaser(patch)} (moco_v2)" if patch and not at.ext else ""
            rows.append(
                check(
                    cid,
                    f"patch shuffling lowers {cl} uniformity at each of {', '.join(patch) or 'the levels'}",
                    paper_text,
                    ev,
                    UNIFORMITY,
                    at.quote("C5.corrupt"),
                )
            )
    patch = [*study.glo, *study.loc]
    # The study blurred at severity 3 only (its corrupt.py hard-codes it): other severities extend it.
    others = [b for b in blur if b != paper.BLUR_LEVEL]
    for blurs, ext in (([paper.BLUR_LEVEL], False), (others, True)):
        if ext and not others:
            continue
        for cl in cls:
            needs = [
                m for m, ok in ((f"{blurs[0]} trials", set(blurs) <= set(blur)), (TABLE1_MISSING, patch)) if not ok
            ]
            ev = (
                Evidence(missing=tuple(needs))
                if needs
                else weakest(
                    [
                        (f"{b} vs {c}", value_contrast(df, {(cl, b): 1.0, (cl, c): -1.0}, UNIFORMITY))
                        for b in blurs
                        for c in patch
                    ],
                    "pairs",
                )
            )
            rows.append(
                check(
                    "C5.blur" + (EXT if ext else ""),
                    f"{', '.join(blurs)} lowers {cl} uniformity less than each patch shuffle (the study's 'barely' is not tested)",
                    "" if ext else f"2.80 vs {_teaser(patch)} (moco_v2)" if patch else "2.80 vs 2.41-2.62",
                    ev,
                    UNIFORMITY,
                    paper.QUOTES["C5.blur" + (EXT if ext else "")],
                )
            )
    return rows


def _every_level(df: pd.DataFrame, levels: list[str], weights) -> Evidence:
    """``value_contrast`` of uniformity with ``weights(level)`` for each level; the weakest decides."""
    return weakest([(c, value_contrast(df, weights(c), UNIFORMITY)) for c in levels], "levels")


def _teaser(levels: list[str]) -> str:
    """The teaser's MoCo-v2 uniformity at ``levels`` (``paper.TEASER_UNIFORMITY``)."""
    return ", ".join(f"{c} {paper.TEASER_UNIFORMITY[c]}" for c in levels if c in paper.TEASER_UNIFORMITY)


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
    """Per trained trial on ori, geometry quantity and class: the value at its first and last
    evaluated epoch (``analysis.dynamics``: the per-epoch history, then the final metrics).

    Returns:
        Columns ``arm``, ``seed``, ``quantity``, ``cls`` (``analysis.dynamics.OVERALL`` for overall
        uniformity), ``first``, ``last`` (epochs), ``change`` (value at ``last`` minus at ``first``).
        The untrained reference (epoch 0) is left out: the check follows the training curve.
    """
    keys = ["arm", "seed", "quantity", "cls"]
    clean = df[df["corruption"] == CLEAN]
    if clean.empty or "optim.epochs" not in clean:
        return pd.DataFrame(columns=[*keys, "first", "last", "change"])
    dyn = dynamics_frame(clean, history).dropna(subset=["value"])
    curve = dyn[dyn["epoch"] > 0].groupby([*keys, "epoch"])["value"].mean().reset_index()
    ends = (
        curve.sort_values("epoch")
        .groupby(keys)
        .agg(first=("epoch", "first"), last=("epoch", "last"), start=("value", "first"), end=("value", "last"))
    )
    return ends.assign(change=ends["end"] - ends["start"]).reset_index().drop(columns=["start", "end"])


def training_evidence(changes: pd.DataFrame, arm: str, quantity: str, sign: int, cls: int | None = OVERALL) -> Evidence:
    """``sign * (last - first)`` of one arm's quantity for class ``cls`` (``EVERY_CLASS``: each class,
    the weakest deciding): t over seeds, or a point value for one seed."""
    mine = changes[(changes["arm"] == arm) & (changes["quantity"] == quantity)]
    if mine.empty:
        return Evidence(missing=(f"{quantity} values of {arm} × {CLEAN}",))
    mine = mine[mine["last"] > mine["first"]]
    if mine.empty:
        return Evidence(missing=(f"{quantity} at a second evaluated epoch of {arm} × {CLEAN} ({HISTORY_HINT})",))
    if cls is EVERY_CLASS:
        return weakest([(f"class {c}", _change(part, sign, quantity)) for c, part in mine.groupby("cls")], "classes")
    mine = mine[mine["cls"] == cls]
    if mine.empty:
        return Evidence(missing=(f"{quantity} of class {cls} of {arm} × {CLEAN}",))
    return _change(mine, sign, quantity)


def _change(mine: pd.DataFrame, sign: int, quantity: str) -> Evidence:
    """Evidence from one class's (or the overall) per-seed changes."""
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
    evaluated epoch to the last (not against the untrained network), class-wise uniformity (every
    class) and intra-class distance (class 0, as Fig. A.1's lower panel) rise for CL and fall for Sup/SupCon;
    overall uniformity rises for all. Needs per-epoch geometry (``history``); without it only the
    final epoch is known and the check is INCONCLUSIVE naming the missing second epoch."""
    changes = training_changes(df, history)
    rows = []
    for arm, is_cl in [(cl, True) for cl in cls] + [(m, False) for m in (SUPERVISED, "supcon")]:
        for quantity, name, which, cl_sign, sl_sign in TRAINING:
            sign = cl_sign if is_cl else sl_sign
            ev = training_evidence(changes, arm, quantity, sign, which)
            says = "rises" if sign > 0 else "falls"
            of = {EVERY_CLASS: " of every class", 0: " of class 0"}.get(which, "")
            rows.append(
                check(
                    "C5.train",
                    f"{name}{of} {says} during training ({arm}, first to last evaluated epoch)",
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
