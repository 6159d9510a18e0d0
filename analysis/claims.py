"""The study's claims (docs/study.md §4), checked on a sweep: PASS / FAIL / INCONCLUSIVE.

Each check is an effect written to be positive when the claim holds, with its 95% interval
(``analysis.evidence``): PASS when the interval lies above zero, FAIL when below,
INCONCLUSIVE when it spans zero or a needed cell is missing (named in ``missing``). Two checks
state their own rule in their claim text: C2.gap (the global gap above zero *and* the local
gap inside ±3 points) and C7.seeds (the seed sd at most 1 point). Every row carries the
study's sentence or table it tests (``quote``, from ``analysis.paper``) and the study's value
for the same corruptions (``paper``). Drops are relative drops in percentage points; ``cl`` is
each contrastive/SSL arm of the sweep (moco_v2 when there is none).

Pretraining claims use trials from no pretrained network; the downstream claim (C4) those that
start from one (``model.init_checkpoint`` or timm's ``model.pretrained`` weights). The untrained
reference (``optim.epochs == 0``) is the floor (S1.floor and the ``.floor`` variants, the pre-declared secondary measure); ``supervised@n`` arms
(``data.labels_per_class``) get ``.matched`` variants of C1/C2 (``analysis.drop_claims``).

    python -m analysis.claims --experiment grid_patch_sizes-shapes [--metric probe_acc]
"""

from __future__ import annotations

import math
import sys

import pandas as pd

from analysis import cli, paper
from analysis.drop_claims import (
    FLOOR,
    MATCHED,
    TABLE1_MISSING,
    drop_claims,
    gamma_claims,
    mean_weights,
    primary_arm,
    seed_claim,
)
from analysis.drops import relative_drops
from analysis.evidence import COLUMNS, Evidence, check, drop_contrast, value_contrast, weakness
from analysis.frame import (
    CLEAN,
    SUPERVISED,
    UNTRAINED,
    annotate,
    contrastive_arms,
    downstream_rows,
    image_side,
    matched_arms,
    trained_arms,
)
from analysis.geometry_claims import geometry_claims
from trainables.metrics import FINETUNE_ACC, KNN_ACC


def _floor_claims(df: pd.DataFrame, metric: str) -> list[dict]:
    """S1.floor (a sanity check, not the study's): every arm learned above the untrained floor."""
    return [
        check(
            "S1.floor",
            f"{arm} on ori beats the untrained backbone",
            "",
            value_contrast(df, {(arm, CLEAN): 1.0, (UNTRAINED, CLEAN): -1.0}, metric, binomial=True),
            "acc pts",
            paper.QUOTES["S1.floor"],
        )
        for arm in trained_arms(df)
    ]


def _pretraining(df: pd.DataFrame, metric: str, history: pd.DataFrame | None) -> list[dict]:
    drops = relative_drops(df, metric)
    cls = contrastive_arms(df) or ["moco_v2"]
    rows = drop_claims(drops, df, cls, metric) + drop_claims(drops, df, cls, metric, v=FLOOR)
    for ref in matched_arms(df):
        rows += drop_claims(drops, df, cls, metric, ref, MATCHED)
    rows = _at_side(rows, image_side(df))
    return (
        rows
        + gamma_claims(drops, df, cls, metric)
        + _at_side(geometry_claims(df, cls, metric, history), image_side(df), AT_SIDE_GEOMETRY)
        + [seed_claim(df, metric)]
        + _floor_claims(df, metric)
    )


AT_SIDE_GEOMETRY = ("C5.corrupt", "C5.blur", "C5.order")  # uniformity values of the study's 32 px CIFAR-10


def _at_side(rows: list[dict], side: float | None, ids: tuple[str, ...] | None = None) -> list[dict]:
    """Table 1's drops of a grid N are for 32 / N px patches, and the teaser's uniformity is of 32 px
    images: say so where this sweep's images differ (``ids``: only these checks, by id prefix)."""
    if side is None or side == paper.STUDY_SIDE:
        return rows
    note = f" [the study at {paper.STUDY_SIDE} px; this sweep at {side:g} px]"
    if ids is None:
        note = (
            f" [Table 1 at {paper.STUDY_SIDE} px; this sweep at {side:g} px: patch side {side / paper.STUDY_SIDE:g}x]"
        )
    return [
        {**r, "paper": r["paper"] + note}
        if r["paper"] and "n/a" not in r["paper"] and (ids is None or r["id"].startswith(ids))
        else r
        for r in rows
    ]


def _scopes(df: pd.DataFrame, untagged: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """(dataset/backbone, trials) groups: claims are made within one setting. ``untagged``: timm's
    weight tag is left out of the grouping only (``vit_small_patch16_224.dino`` and ``.augreg_in1k``
    are one backbone); the trials keep their full ``model.backbone``, so each weight pairs its own
    clean trial."""
    keys = [df[k] for k in ("data.dataset", "model.backbone") if k in df]
    if not keys:
        return [("", df)]
    if untagged and "model.backbone" in df:
        keys[-1] = keys[-1].map(lambda b: str(b).split(".")[0])
    return [("/".join(map(str, k if isinstance(k, tuple) else (k,))), part) for k, part in df.groupby(keys)]


def _across_scopes(rows: list[dict], scopes: list[tuple[str, pd.DataFrame]]) -> dict:
    """C3: the average-drop claim (C1.avg, the primary CL arm vs supervised) holds in every setting;
    the weakest setting decides (a FAIL anywhere fails it)."""
    firsts = [_primary_avg(rows, name, primary_arm(contrastive_arms(part) or ["moco_v2"])) for name, part in scopes]
    if len(scopes) < 2:
        ev = Evidence(missing=(f"a second dataset or backbone (found {scopes[0][0] if scopes else 'none'})",))
    else:
        worst = min(firsts, key=_weakness)
        ev = Evidence(
            worst["effect"],
            worst["low"],
            worst["high"],
            worst["n_seeds"],
            f"weakest setting: {worst['scope']}",
            () if worst["verdict"] == "FAIL" else tuple(r["missing"] for r in firsts if r["missing"]),
            decision=worst["verdict"],
        )
    return {
        **check(
            "C3.settings",
            "C1.avg holds in every dataset/backbone (the direction; the study's '2x or more' is not tested)",
            "ImageNet (likely IN-1k): 27.7 vs 10.3 (R50)",
            ev,
            "pts",
            paper.QUOTES["C3.settings"],
        ),
        "scope": "all",
    }


def _primary_avg(rows: list[dict], scope: str, arm: str) -> dict:
    """The scope's study C1.avg row of ``arm`` against supervised (its only row when no level ran)."""
    avg = [r for r in rows if r["scope"] == scope and r["id"] == "C1.avg"]
    return next((r for r in avg if r["claim"].endswith(f": {arm} > {SUPERVISED}")), avg[0])


def _weakness(row: dict) -> tuple:
    """``evidence.weakness`` of a claims row (no interval: below every interval)."""
    return weakness(row["verdict"], row["low"], -math.inf)


def _study_backbone(backbone: str) -> str | None:
    """The study's name for a downstream backbone (``paper.DOWNSTREAM_DROP``), if it used one like it."""
    for prefix, name in (("resnet18", "ResNet-18"), ("vit_small", "ViT-S")):
        if str(backbone).startswith(prefix):
            return name
    return None


def _downstream(df: pd.DataFrame, metric: str) -> list[dict]:
    """C4 per dataset/backbone (timm's weight tag dropped: ``vit_small_patch16_224.dino`` and
    ``.augreg_in1k`` are one backbone) and CL arm: after clean pretraining, fine-tuning on corrupted
    data hurts CL *less* than Sup. The study's protocol is ``finetune_acc`` (``eval.finetune``);
    without it C4.downstream is INCONCLUSIVE naming it, and ``metric`` gives a row that is not the
    study's: ``C4.frozen`` (optim.epochs 0) or ``C4.retrained`` (trained on with the method's own loss)."""
    scopes = [(name, part) for name, part in _scopes(df, untagged=True) if contrastive_arms(part)] if len(df) else []
    if not scopes:
        ev = Evidence(
            missing=("downstream trials (model.init_checkpoint or model.pretrained set) of supervised and a CL method",)
        )
        return [_c4("C4.downstream", "downstream Avg Δ: supervised > CL", "R18: 16.3 > 12.8 (MoCo)", ev, "all")]
    rows = []
    for name, part in scopes:
        tuned = FINETUNE_ACC in part and part[FINETUNE_ACC].notna().any()
        other = "C4.frozen" if "optim.epochs" not in part or (part["optim.epochs"] == 0).all() else "C4.retrained"
        study = _study_backbone(part["model.backbone"].iloc[0]) if "model.backbone" in part else None
        part = part[part["corruption"].isin([CLEAN, *paper.TABLE1_LEVELS])]  # the levels of the study's Avg
        for cl in contrastive_arms(part):
            if tuned:
                rows.append(_c4_row(part, cl, FINETUNE_ACC, "C4.downstream", study, name))
                continue
            lacking = Evidence(missing=(f"{FINETUNE_ACC} (eval.finetune: true, sweeps/downstream.py)",))
            rows.append(_c4("C4.downstream", f"downstream Avg Δ: {SUPERVISED} > {cl} (fine-tuned)", "", lacking, name))
            rows.append(_c4_row(part, cl, metric, other, study, name))
    return rows


def _c4_row(part: pd.DataFrame, cl: str, column: str, cid: str, study: str | None, scope: str) -> dict:
    """One C4 check: supervised's mean relative drop of ``column`` over Table 1's levels run minus ``cl``'s."""
    drops = relative_drops(part, column)
    corrupted = sorted(set(drops["corruption"]))
    weights = {**mean_weights(SUPERVISED, corrupted), **mean_weights(cl, corrupted, -1)}
    ev = drop_contrast(drops, weights, column) if corrupted else Evidence(missing=(TABLE1_MISSING,))
    claim = f"downstream Avg Δ over {', '.join(corrupted) or 'the corruptions'}: {SUPERVISED} > {cl} ({column})"
    return _c4(cid, claim, paper.downstream_text(study, SUPERVISED, cl, corrupted), ev, scope)


def _c4(cid: str, claim: str, text: str, ev: Evidence, scope: str) -> dict:
    return {**check(cid, claim, text, ev, "pts", paper.QUOTES[cid]), "scope": scope}


def claim_checks(df: pd.DataFrame, metric: str = KNN_ACC, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Evaluate every claim on a trial frame.

    Args:
        df: trial frame (``analysis.collect``, or any frame with ``method``, ``corruption``,
            ``seed``, the metric and ``uniformity``; more columns enable more checks).
        metric: accuracy column the drops and correlations use.
        history: per-epoch metrics (``analysis.collect.histories`` with
            ``analysis.dynamics.HISTORY_KEYS``); C5.train needs them, else it is INCONCLUSIVE.

    Returns:
        One row per check: ``COLUMNS`` (``effect``, ``low``, ``high`` in ``unit``;
        ``missing`` names the cells an INCONCLUSIVE check lacked; ``quote`` the study's text).
    """
    df = annotate(df)
    downstream = downstream_rows(df)
    # a scope of only untrained references (a downstream sweep's) has no pretraining claim to test
    scopes = [(name, part) for name, part in _scopes(df[~downstream]) if trained_arms(part)]
    rows = [{**r, "scope": name} for name, part in scopes for r in _pretraining(part, metric, history)]
    rows += [_across_scopes(rows, scopes), *_downstream(df[downstream], metric)]
    return pd.DataFrame(rows, columns=COLUMNS)


def format_claims(table: pd.DataFrame, verdicts: tuple[str, ...] | None = None) -> str:
    """Plain-text lines, one per check: verdict, claim, effect [interval], then what is missing;
    only the checks with one of ``verdicts`` when given. The last line counts every verdict."""
    lines = []
    shown = table if verdicts is None else table[table["verdict"].isin(verdicts)]
    for _, r in shown.iterrows():
        effect = "" if math.isnan(r["effect"]) else f"  effect {r['effect']:+.3g} {r['unit']}"
        interval = "" if math.isnan(r["low"]) else f" [{r['low']:+.3g}, {r['high']:+.3g}]"
        how = f" ({r['interval']})" if r["interval"] else ""
        missing = f"  missing: {r['missing']}" if r["missing"] else ""
        study = f"  paper: {r['paper']}" if r["paper"] else ""
        scope = f"[{r['scope']}] " if r["scope"] not in ("", "all") and table["scope"].nunique() > 2 else ""
        lines.append(f"{r['verdict']:<12} {r['id']:<18} {scope}{r['claim']}{effect}{interval}{how}{missing}{study}")
    lines.append(verdict_counts(table))
    return "\n".join(lines)


def verdict_counts(table: pd.DataFrame) -> str:
    """``"3 PASS, 1 FAIL, 9 INCONCLUSIVE (4 of the PASS/FAIL on one seed: ...)"``: the count of every
    verdict, and how many PASS/FAIL rest on one seed: their interval is the test images' sampling
    error alone, without the training seed's noise (C7.seeds needs two or more seeds)."""
    counts = table["verdict"].value_counts()
    text = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE"))
    one_seed = one_seed_verdicts(table)
    return text + (
        f" ({one_seed} of the PASS/FAIL on one seed: no training-seed noise in their intervals)" if one_seed else ""
    )


def one_seed_verdicts(table: pd.DataFrame) -> int:
    """How many PASS/FAIL of a claims table rest on one seed."""
    return int((table["verdict"].isin(["PASS", "FAIL"]) & (table["n_seeds"] == 1)).sum())


def main(argv: list[str] | None = None) -> int:
    """CLI: print the claim checks; write them as CSV (with the quoted study text) and text."""
    return cli.run(_main, cli.parser(__doc__, metric=True).parse_args(argv))


def _main(args) -> None:
    from analysis import collect
    from analysis.dynamics import HISTORY_KEYS

    df, source = cli.load(args, need_clean=True)
    table = claim_checks(df, args.metric, collect.histories(df, HISTORY_KEYS, source.uri))
    text = format_claims(table)
    table.to_csv(source.out / "claims.csv", index=False)
    (source.out / "claims.txt").write_text(text + "\n")
    print(
        f"Claim checks on {args.experiment!r} ({args.metric}):\n{text}\n\nwritten: {source.out}/claims.csv, claims.txt"
    )


if __name__ == "__main__":
    sys.exit(main())
