"""The study's claims (paper-notes §4), checked on a sweep: PASS / FAIL / INCONCLUSIVE.

Each check is an effect written to be positive when the claim holds, with its 95% interval
(``analysis.evidence``): PASS when the interval lies above zero, FAIL when below,
INCONCLUSIVE when it spans zero or a needed cell is missing (named in ``missing``). Drops are
relative drops in percentage points; ``cl`` is each contrastive/SSL method of the sweep
(moco_v2 when there is none). Pretraining claims use trials without ``model.init_checkpoint``;
the downstream claim (C4) the ones with it. The untrained reference (``optim.epochs == 0``)
serves as epoch 0 of every method (C5d, C5e) and as the floor (S1).

    python -m analysis.claims --experiment grid_patch_sizes-digits [--metric probe_acc]
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from analysis import cli
from analysis.drops import relative_drops
from analysis.evidence import Evidence, correlation_contrast, drop_contrast, value_contrast
from analysis.frame import (
    CLEAN,
    FAMILIES,
    SUPERVISED,
    UNTRAINED,
    annotate,
    contrastive_arms,
    in_family,
    trained_arms,
)

COLUMNS = ["id", "claim", "paper", "verdict", "effect", "low", "high", "unit", "n_seeds", "interval", "missing", "scope"]
# paper-notes §3.2 (CIFAR-10, ResNet-18): average relative drop (%) and per-level drops.
PAPER_AVG = {"supervised": 20.3, "supcon": 22.1, "moco_v2": 24.5, "byol": 24.8, "barlow_twins": 24.8, "dino": 27.0}
PAPER_DROP = {("supervised", "glo_8"): 26.4, ("supervised", "glo_4"): 15.0, ("moco_v2", "glo_8"): 31.8,
              ("moco_v2", "glo_4"): 24.3, ("byol", "glo_8"): 31.4, ("byol", "glo_4"): 23.7,
              ("barlow_twins", "glo_8"): 31.2, ("barlow_twins", "glo_4"): 23.1, ("dino", "glo_8"): 34.1,
              ("dino", "glo_4"): 24.2}
PAPER_UNIFORMITY = {"moco_v2": 2.82, "supervised": 2.15, "supcon": 1.44}


def _row(cid: str, claim: str, paper: str, ev: Evidence, unit: str) -> dict:
    return {"id": cid, "claim": claim, "paper": paper, "verdict": ev.verdict, "effect": ev.effect, "low": ev.low,
            "high": ev.high, "unit": unit, "n_seeds": ev.n_seeds, "interval": ev.interval,
            "missing": ", ".join(ev.missing)}


def _paper(a: object, b: object) -> str:
    return f"{a} > {b}" if a is not None and b is not None else ""


def _mean_weights(arm: str, corruptions: list[str], sign: float = 1.0) -> dict:
    return {(arm, c): sign / len(corruptions) for c in corruptions}


def _family(df: pd.DataFrame, family: str) -> list[str]:
    """Corrupted settings of one family present in the frame."""
    return sorted(set(df.loc[df["family"] == family, "corruption"]))


def _avg_drop_claims(drops: pd.DataFrame, df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C1: every CL method's average drop over the patch shuffles exceeds SupCon's and Sup's."""
    patch = _family(df, "global") + _family(df, "local")
    if not patch:
        return [_row("C1.avg", "Avg Δ: CL > supervised", "24.5 > 20.3", Evidence(missing=("glo_*/loc_* trials",)), "pts")]
    rows = []
    pairs = [(cl, SUPERVISED) for cl in cls] + [("supcon", SUPERVISED)] + [(cl, "supcon") for cl in cls[:1]]
    for a, b in pairs:
        ev = drop_contrast(drops, {**_mean_weights(a, patch), **_mean_weights(b, patch, -1)}, "_metric")
        rows.append(_row("C1.avg", f"Avg Δ over {len(patch)} patch shuffles: {a} > {b}",
                         _paper(PAPER_AVG.get(a), PAPER_AVG.get(b)), ev, "pts"))
    for cl in cls:
        for level in ("glo_8", "glo_4"):
            ev = drop_contrast(drops, {(cl, level): 1.0, (SUPERVISED, level): -1.0}, "_metric")
            rows.append(_row("C1.glo", f"Δ({cl}, {level}) > Δ(supervised, {level})",
                             _paper(PAPER_DROP.get((cl, level)), PAPER_DROP.get((SUPERVISED, level))), ev, "pts"))
    return rows


def _global_vs_local_claims(drops: pd.DataFrame, df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C2: the CL-SL gap comes from global shuffling; within CL, global hurts more than local."""
    glo, loc = _family(df, "global"), _family(df, "local")
    rows = []
    for cl in cls:
        if not glo or not loc:
            ev = Evidence(missing=tuple(f"{f}_* trials" for f, s in (("glo", glo), ("loc", loc)) if not s))
            gap = within = ev
        else:
            gap = drop_contrast(drops, {**_mean_weights(cl, glo), **_mean_weights(SUPERVISED, glo, -1),
                                        **_mean_weights(cl, loc, -1), **_mean_weights(SUPERVISED, loc)}, "_metric")
            within = drop_contrast(drops, {**_mean_weights(cl, glo), **_mean_weights(cl, loc, -1)}, "_metric")
        rows.append(_row("C2.gap", f"CL-SL gap larger under global than local shuffling ({cl})",
                         "Glo4 gap 9.3 > Loc8 gap -0.1", gap, "pts"))
        rows.append(_row("C2.cl", f"Δ({cl}, global) > Δ({cl}, local)", "24.3 > 13.3", within, "pts"))
    return rows


def _uniformity_claims(df: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C5: corruption lowers CL uniformity; on clean data MoCo > Sup > SupCon; class-wise
    uniformity and intra-class distance rise for CL and fall for Sup/SupCon (vs epoch 0)."""
    patch = _family(df, "global") + _family(df, "local")
    rows = []
    for cl in cls:
        ev = (value_contrast(df, {(cl, CLEAN): 1.0, **_mean_weights(cl, patch, -1)}, "uniformity") if patch
              else Evidence(missing=("glo_*/loc_* trials",)))
        rows.append(_row("C5.corrupt", f"patch shuffling lowers {cl} uniformity", "2.82 > 2.41-2.62", ev, "uniformity"))
    blur = sorted(c for c in set(df["corruption"]) if str(c).startswith("defocusblur"))
    for cl in cls:
        needs = [m for m, ok in (("defocusblur_* trials", blur), ("glo_*/loc_* trials", patch)) if not ok]
        ev = (Evidence(missing=tuple(needs)) if needs
              else value_contrast(df, {**_mean_weights(cl, blur), **_mean_weights(cl, patch, -1)}, "uniformity"))
        rows.append(_row("C5.blur", f"defocus blur lowers {cl} uniformity less than patch shuffling",
                         "2.80 vs 2.41-2.62", ev, "uniformity"))
    for a, b in [(cl, SUPERVISED) for cl in cls] + [(SUPERVISED, "supcon")]:
        ev = value_contrast(df, {(a, CLEAN): 1.0, (b, CLEAN): -1.0}, "uniformity")
        rows.append(_row("C5.order", f"uniformity on ori: {a} > {b}",
                         _paper(PAPER_UNIFORMITY.get(a), PAPER_UNIFORMITY.get(b)), ev, "uniformity"))
    for arm, sign, says in [(cl, 1, "rises") for cl in cls] + [(m, -1, "falls") for m in (SUPERVISED, "supcon")]:
        for column, label in (("classwise_mean", "class-wise uniformity"), ("intra_distance", "intra-class distance")):
            ev = value_contrast(df, {(arm, CLEAN): float(sign), (UNTRAINED, CLEAN): float(-sign)}, column)
            rows.append(_row("C5.train", f"{label} {says} during training ({arm}, vs untrained)", "qualitative (Fig. A.1)",
                             ev, column))
    return rows


def _tracking_claims(df: pd.DataFrame, metric: str) -> list[dict]:
    """C6: within a corruption family uniformity tracks accuracy (Spearman > 0), ECE less so."""
    trained = df[df["arm"] != UNTRAINED]
    rows = []
    for family in FAMILIES:
        points = trained[in_family(trained, family)] if (df["family"] == family).any() else trained.iloc[:0]
        ev = correlation_contrast(points, metric, "uniformity") if len(points) else Evidence(missing=(f"{family} trials",))
        rows.append(_row("C6.unif", f"{family}: uniformity rises with accuracy (Spearman r)", "Table C.1: monotone", ev, "r"))
        ev = correlation_contrast(points, metric, "uniformity", "ece") if len(points) else ev
        rows.append(_row("C6.ece", f"{family}: uniformity tracks accuracy better than ECE (r_U - |r_ECE|)",
                         "Table C.1: ECE non-monotone", ev, "r"))
    return rows


def _seed_noise_claims(drops: pd.DataFrame, cls: list[str]) -> list[dict]:
    """C7: seed noise is small next to the CL-SL gap. On the corrupted settings where both arms
    have two or more seeds: effect = mean |drop(cl) - drop(sup)| - 2 x pooled seed std of a
    drop. A point value (no interval): PASS when the gap exceeds twice the noise."""
    rows = []
    for cl in cls:
        cells = drops[drops["arm"].isin([cl, SUPERVISED])].groupby(["corruption", "arm"])["drop"].agg(["mean", "var", "count"])
        wide = cells[cells["count"] >= 2].unstack("arm")
        shared = [c for c in wide.index if all((k, a) in wide.columns and not pd.isna(wide.loc[c, (k, a)])
                                               for k in ("mean", "var") for a in (cl, SUPERVISED))]
        if not shared:
            ev = Evidence(missing=(f"two or more seeds of {cl} and supervised on a corrupted setting",))
        else:
            gap = float(np.mean([abs(wide.loc[c, ("mean", cl)] - wide.loc[c, ("mean", SUPERVISED)]) for c in shared]))
            sd = math.sqrt(float(np.mean([wide.loc[c, ("var", a)] for c in shared for a in (cl, SUPERVISED)])))
            effect = gap - 2 * sd
            ev = Evidence(effect, effect, effect, int(wide.loc[shared, ("count", cl)].min()),
                          f"point value: |gap| {gap:.2f} vs seed sd {sd:.2f} over {', '.join(shared)}")
        rows.append(_row("C7.seeds", f"seed noise small next to the {cl}-supervised drop gap (|gap| - 2 sd)",
                         "sd 0.2-0.4 kNN pts", ev, "pts"))
    return rows


def _floor_claims(df: pd.DataFrame, metric: str) -> list[dict]:
    """S1 (a sanity check, not the study's): every method learned above the untrained floor."""
    return [_row("S1.floor", f"{arm} on ori beats the untrained backbone", "",
                 value_contrast(df, {(arm, CLEAN): 1.0, (UNTRAINED, CLEAN): -1.0}, metric, binomial=True), "acc pts")
            for arm in trained_arms(df)]


def _pretraining(df: pd.DataFrame, metric: str) -> list[dict]:
    drops = relative_drops(df, metric).rename(columns={metric: "_metric"})
    cls = contrastive_arms(df) or ["moco_v2"]
    rows = _avg_drop_claims(drops, df, cls) + _global_vs_local_claims(drops, df, cls)
    gam = _family(df, "gamma")
    for cl in cls:
        ev = (drop_contrast(drops, {**_mean_weights(cl, gam), **_mean_weights(SUPERVISED, gam, -1)}, "_metric")
              if gam else Evidence(missing=("gam_* trials (sweeps/gamma.py)",)))
        rows.append(_row("C8.gamma", f"Avg Δ over gamma: {cl} > supervised", "ICLR version, no numbers", ev, "pts"))
    return (rows + _uniformity_claims(df, cls) + _tracking_claims(df, metric) + _seed_noise_claims(drops, cls)
            + _floor_claims(df, metric))


def _with_geometry(df: pd.DataFrame) -> pd.DataFrame:
    """Adds ``classwise_mean`` and ``intra_distance`` (mean over classes) from the lists."""
    def mean_of(values, diagonal=False):
        if not isinstance(values, list):
            return math.nan
        values = np.diag(np.asarray(values, float)) if diagonal else np.asarray(values, float)
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    out = df.copy()
    out["classwise_mean"] = [mean_of(v) for v in df.get("classwise_uniformity", pd.Series(None, index=df.index))]
    out["intra_distance"] = [mean_of(v, True) for v in df.get("feature_distance", pd.Series(None, index=df.index))]
    return out


def _scopes(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(dataset/backbone, trials) groups: claims are made within one setting."""
    keys = [k for k in ("data.dataset", "model.backbone") if k in df]
    if not keys:
        return [("", df)]
    return [("/".join(map(str, k if isinstance(k, tuple) else (k,))), part) for k, part in df.groupby(keys)]


def _across_scopes(rows: list[dict], scopes: list[str]) -> dict:
    """C3: the average-drop claim (C1.avg, first CL method vs supervised) holds in every setting."""
    firsts = [next(r for r in rows if r["scope"] == s and r["id"] == "C1.avg") for s in scopes]
    if len(scopes) < 2:
        ev = Evidence(missing=(f"a second dataset or backbone (found {scopes[0] or 'one'})",))
    else:
        worst = min(firsts, key=lambda r: r["low"] if not math.isnan(r["low"]) else -math.inf)
        ev = Evidence(worst["effect"], worst["low"], worst["high"], worst["n_seeds"], f"weakest setting: {worst['scope']}",
                      tuple(m for r in firsts for m in ([r["missing"]] if r["missing"] else [])))
    return {**_row("C3.settings", "C1.avg holds in every dataset/backbone", "IN-1k: 27.7 vs 10.3 (R50)", ev, "pts"),
            "scope": "all"}


def _downstream(df: pd.DataFrame, metric: str) -> dict:
    """C4: after clean pretraining, fine-tuning on corrupted data hurts CL *less* than Sup."""
    cls = contrastive_arms(df) if len(df) else []
    if not len(df) or not cls:
        ev = Evidence(missing=("downstream trials (model.init_checkpoint set) of supervised and a CL method",))
    else:
        drops = relative_drops(df, metric).rename(columns={metric: "_metric"})
        corrupted = sorted(set(drops["corruption"]))
        ev = drop_contrast(drops, {**_mean_weights(SUPERVISED, corrupted), **_mean_weights(cls[0], corrupted, -1)}, "_metric")
    return {**_row("C4.downstream", "downstream Avg Δ: supervised > CL", "R18: 16.3 > 12.8 (MoCo)", ev, "pts"), "scope": "all"}


def claim_checks(df: pd.DataFrame, metric: str = "knn_acc") -> pd.DataFrame:
    """Evaluate every claim on a trial frame.

    Args:
        df: trial frame (``analysis.collect``, or any frame with ``method``, ``corruption``,
            ``seed``, the metric and ``uniformity``; more columns enable more checks).
        metric: accuracy column the drops and correlations use.

    Returns:
        One row per check: ``COLUMNS`` (``effect``, ``low``, ``high`` in ``unit``;
        ``missing`` names the cells an INCONCLUSIVE check lacked).
    """
    df = _with_geometry(annotate(df))
    init = df["model.init_checkpoint"] if "model.init_checkpoint" in df else pd.Series(None, index=df.index)
    downstream = init.map(lambda v: isinstance(v, str) and bool(v))
    scopes = _scopes(df[~downstream])
    rows = [{**r, "scope": name} for name, part in scopes for r in _pretraining(part, metric)]
    rows += [_across_scopes(rows, [name for name, _ in scopes]), _downstream(df[downstream], metric)]
    return pd.DataFrame(rows, columns=COLUMNS)


def format_claims(table: pd.DataFrame) -> str:
    """Plain-text lines, one per check: verdict, claim, effect [interval], then what is missing."""
    lines = []
    for _, r in table.iterrows():
        effect = "" if math.isnan(r["effect"]) else f"  effect {r['effect']:+.3g} {r['unit']}"
        interval = "" if math.isnan(r["low"]) else f" [{r['low']:+.3g}, {r['high']:+.3g}]"
        how = f" ({r['interval']})" if r["interval"] else ""
        missing = f"  missing: {r['missing']}" if r["missing"] else ""
        paper = f"  paper: {r['paper']}" if r["paper"] else ""
        scope = f"[{r['scope']}] " if r["scope"] not in ("", "all") and table["scope"].nunique() > 2 else ""
        lines.append(f"{r['verdict']:<12} {r['id']:<13} {scope}{r['claim']}{effect}{interval}{how}{missing}{paper}")
    counts = table["verdict"].value_counts()
    lines.append(", ".join(f"{counts.get(v, 0)} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the claim checks; write them as CSV and text."""
    return cli.run(_main, cli.parser(__doc__, metric=True).parse_args(argv))


def _main(args) -> None:
    df, source = cli.load(args, need_clean=True)
    table = claim_checks(df, args.metric)
    text = format_claims(table)
    table.to_csv(source.out / "claims.csv", index=False)
    (source.out / "claims.txt").write_text(text + "\n")
    print(f"Claim checks on {args.experiment!r} ({args.metric}):\n{text}\n\nwritten: {source.out}/claims.csv, claims.txt")


if __name__ == "__main__":
    sys.exit(main())
