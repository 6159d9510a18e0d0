"""The study's numbers and the sentences each claim check tests (Zhong et al., ICCV 2023).

Every value is the study's as summarised in ``docs/study.md``, and the section named with it
(``§3.2`` ...) is that page's. Table 1 (§3.2) is read off the study's bar chart (about ±0.1; each
printed Avg is the mean of its four bars). §4 of that page states the study's claims as testable
statements, with the study's numbers in brackets; the supplement and teaser numbers are the
study's exactly. ``QUOTES`` holds, per check id, what that check tests.
"""

from __future__ import annotations

from analysis.frame import SUPERVISED

# §3.2 Table 1: relative drop (%) after pretraining on corrupted CIFAR-10, ResNet-18.
TABLE1_LEVELS = ("glo_8", "glo_4", "loc_4", "loc_8")
STUDY_SIDE = 32  # CIFAR-10's side: the patch of a grid N is 32 / N pixels in every Table 1 value
_TABLE1 = {  # method: (Glo 8, Glo 4, Loc 4, Loc 8), printed Avg
    "supervised": ((26.4, 15.0, 26.3, 13.4), 20.3),
    "supcon": ((29.8, 18.5, 25.4, 14.8), 22.1),
    "moco_v2": ((31.8, 24.3, 28.6, 13.3), 24.5),
    "byol": ((31.4, 23.7, 29.1, 15.0), 24.8),
    "barlow_twins": ((31.2, 23.1, 29.7, 15.3), 24.8),
    "dino": ((34.1, 24.2, 30.9, 18.6), 27.0),
}
PAPER_DROP = {(m, c): v for m, (row, _) in _TABLE1.items() for c, v in zip(TABLE1_LEVELS, row, strict=True)}
PAPER_AVG = {m: avg for m, (_, avg) in _TABLE1.items()}
# §4 item 5 / §3.6: final overall uniformity on clean CIFAR-10. MoCo-v2's 2.82 is its 800-epoch value
# (the teaser's); at 200 epochs, the schedule of Sup's and SupCon's values, its curve reads 2.34.
PAPER_UNIFORMITY = {"moco_v2": 2.82, "supervised": 2.15, "supcon": 1.44}
PAPER_UNIFORMITY_200 = {"moco_v2": 2.34}
# The teaser table: MoCo-v2's uniformity on ori and at each of Table 1's levels (docs/study.md §3.1).
BLUR_LEVEL = "defocusblur_3"  # the study's defocus blur: corrupt.py hard-codes CIFAR-10-C severity 3
TEASER_UNIFORMITY = {"ori": 2.82, "glo_8": 2.45, "glo_4": 2.41, "loc_4": 2.42, "loc_8": 2.62}
# §3.7 (SUPP A.1): seed standard deviation of MoCo-v2 kNN accuracy, 3 runs of 200 epochs.
PAPER_SEED_SD = {"ori": 0.18, "glo_8": 0.40}

# C2: the cells of its sentence, "Δ(CL, Glo4) − Δ(Sup, Glo4) ≈ 8–9 pts, while at Loc8 the gap is ≈ 0".
GAP_CELLS = ("glo_4", "loc_8")
# C2.gap: the CL-SL gap at Loc 8 counts as "about zero" inside +-this many points, set from the
# sentence's own bracket (MoCo-v2 -0.1). The study's Glo 4 gaps are +8.1 (Barlow) to +9.3 (MoCo-v2);
# at Loc 8 its BYOL, Barlow and DINO gaps are +1.6, +1.9 and +5.2: DINO misses the rule in the study too.
LOCAL_GAP_TOLERANCE = 3.0
# §3.4: downstream relative drop (%) after fine-tuning an ImageNet-pretrained network on corrupted
# CIFAR-10, per backbone the study used: method -> (Glo 8, Glo 4, Loc 4, Loc 8) as TABLE1_LEVELS.
_DOWNSTREAM = {
    "ResNet-18": {
        "supervised": (19.8, 8.8, 25.5, 11.0),
        "moco_v2": (15.9, 7.5, 20.1, 7.7),
        "byol": (16.9, 7.9, 22.0, 9.4),
        "barlow_twins": (2.5, 0.1, 21.0, 9.2),  # its Glo 4 bar is a sliver: about 0.1
    },
    "ViT-S": {
        "supervised": (44.2, 32.0, 44.2, 36.7),
        "dino": (33.2, 19.3, 37.1, 29.6),
        "moco_v3": (36.4, 21.7, 40.1, 33.0),
        "mae": (28.5, 20.5, 30.8, 26.0),
    },
}
# Its printed Avg per method (the mean of the four bars read off the figure can differ by 0.1).
DOWNSTREAM_AVG = {
    "ResNet-18": {"supervised": 16.3, "moco_v2": 12.8, "byol": 14.1, "barlow_twins": 8.2},
    "ViT-S": {"supervised": 39.3, "dino": 29.8, "moco_v3": 32.8, "mae": 26.5},
}
DOWNSTREAM_DROP = {
    (backbone, m, c): v
    for backbone, rows in _DOWNSTREAM.items()
    for m, row in rows.items()
    for c, v in zip(TABLE1_LEVELS, row, strict=True)
}
# C7.seeds: the largest seed sd (accuracy points) still called "small": 2.5x the study's 0.40.
SEED_SD_LIMIT = 1.0

_TABLE1_TEXT = (
    "Table 1 (docs/study.md §3.2), relative drop %, CIFAR-10, ResNet-18: "
    "| method | Glo 8 | Glo 4 | Loc 4 | Loc 8 | Avg | "
    + " ".join(f"| {m} | {' | '.join(map(str, row))} | {avg} |" for m, (row, avg) in _TABLE1.items())
)
_TEASER = (
    "Teaser table (docs/study.md §3.1), SL acc | CL acc | CL uniformity: Original 89.53 | 88.73 | 2.82; "
    "Local mild (Loc 8) 77.49 (13%↓) | 76.90 (13%↓) | 2.62 (7%↓); Local severe (Loc 4) 65.94 (26%↓) | "
    "63.35 (29%↓) | 2.42 (14%↓); Global mild (Glo 4) 76.06 (15%↓) | 67.18 (24%↓) | 2.41 (15%↓); "
    "Global severe (Glo 8) 65.88 (26%↓) | 60.51 (32%↓) | 2.45 (13%↓)"
)

EXTENSION = (
    "Not the study's levels: the same comparison on every level of the family this sweep ran (the study ran "
    "Glo 4, Glo 8, Loc 4, Loc 8 only), an extension of: "
)

QUOTES = {
    "C1.avg": (
        "§4.1: 'CL relies more on spatial structure than SL (pretraining, CIFAR-10, ResNet-18): Avg Δ: every "
        f"CL method > SupCon > Sup [24.5–27.0 > 22.1 > 20.3].' {_TABLE1_TEXT}"
    ),
    "C1.glo": (
        "§4.1: 'Δ(MoCo-v2, Glo8) > Δ(Sup, Glo8) [31.8 > 26.4]. Δ(MoCo-v2, Glo4) > Δ(Sup, Glo4) [24.3 > 15.0]. "
        f"The same holds for BYOL, Barlow and DINO.' {_TEASER}"
    ),
    "C2.gap": (
        "§4.2: 'The CL–SL gap comes mostly from global shuffling: Δ(CL, Glo4) − Δ(Sup, Glo4) ≈ 8–9 pts, while "
        "at Loc8 the gap is ≈ 0 [MoCo 13.3 vs Sup 13.4].' Table 1: Glo 4 MoCo-v2 24.3, Sup 15.0; "
        "Loc 8 MoCo-v2 13.3, Sup 13.4."
    ),
    "C2.cl": ("§4.2: 'Within CL, Δ(Glo4) ≫ Δ(Loc8) [MoCo 24.3 vs 13.3]. For Sup they are similar [15.0 vs 13.4].'"),
    "C3.settings": (
        "§4.3: 'The same pattern holds on ImageNet and across backbones: Avg Δ_A: CL is about 2× or more "
        "that of Sup (ResNet-50, ViT-S, ViT-B).' §3.3: ResNet-50 Sup 10.3%, MoCo-v2 27.7%."
    ),
    "C4.downstream": (
        "§4.4: 'Downstream robustness is reversed: with clean ImageNet pretraining, then fine-tuning on "
        "corrupted CIFAR-10: Avg Δ(CL) < Avg Δ(Sup): ResNet-18 [MoCo 12.8, BYOL 14.1, Barlow 8.2 < "
        "Sup 16.3].'"
    ),
    "C5.corrupt": (
        f"§4.5: 'Corruption lowers CL feature uniformity: 2.82 → 2.41–2.62; global ≤ 2.45, local mild 2.62.' {_TEASER}"
    ),
    "C5.blur": "§4.5: 'Defocus blur barely changes it [2.80].' (t-SNE titles: Original 2.82, Defocus blur 2.80)",
    "C5.order": "§4.5: 'Final overall uniformity: MoCo > Sup > SupCon [2.82, 2.15, 1.44].'",
    "C5.train": (
        "§4.5: 'For Sup and SupCon, class-wise uniformity *decreases* during training while overall "
        "uniformity rises. For MoCo, both rise. Intra-class distance rises for MoCo and falls for Sup/SupCon "
        "[SUPP A.2, qualitative].' §3.6 (Fig. A.1): class-wise values 'MoCo: rise to about 2.2–2.6 at 800 "
        "epochs. SupCon: settle at about 0.18–0.69 by epoch 200. Sup: fall to about 0.12–0.45 by epoch 200.'"
    ),
    "C6.unif": (
        "§4.6: 'Uniformity tracks accuracy within one corruption family, ECE does not [Table C.1]: Global: "
        "2.16 > 2.11 > 2.10 matches 89.6 > 81.5 > 29.44. Local: 2.18 > 2.13 > 2.10 matches 89.4 > 77.4 > "
        "29.44.'"
    ),
    "C6.ece": "§4.6: 'ECE is non-monotone.' Table C.1 ECE: 1.97, 2.80, 0.06, 1.18, 0.69, 1.64.",
    "C7.seeds": (
        "SUPP A.1: 'We repeat MoCo-v2 on the original CIFAR-10 200ep three times: The KNN evaluation mean and "
        "std is 82.44 ± 0.18 . Repeating MoCo-v2 on the global 8x8 shuffling corrupted CIFAR-10 gives KNN "
        "evaluation mean and std 59.24 ± 0.40 . The linear evaluation variance is similar. The randomness has a "
        "smaller order than the gap between MoCo and Sup results.' §4.7: 'Seed noise is small (σ ≈ 0.2–0.4 KNN "
        "points) compared with the method gaps.'"
    ),
    "C8.gamma": (
        "§4.8 (ICLR/arXiv versions, numbers unavailable): 'Pretraining pixel-level (gamma) and patch-level "
        "corruptions: Δ^P_CL > Δ^P_SL.'"
    ),
    "C4.frozen": (
        "Not the study's protocol: the frozen network's accuracy on corrupted data (kNN or linear probe, no "
        "fine-tuning), beside the fine-tuning sentence it stands in for: "
    ),
    "C4.retrained": (
        "Not the study's protocol: the given network trained further on corrupted data by its method's own "
        "training (not the fine-tune protocol of eval.finetune), then evaluated, beside the fine-tuning "
        "sentence it stands in for: "
    ),
    "S1.floor": "Not the study's: a sanity check that each method learned above the untrained network.",
}
QUOTES["C4.frozen"] += QUOTES["C4.downstream"]
QUOTES["C4.retrained"] += QUOTES["C4.downstream"]
QUOTES.update({f"{cid}.ext": EXTENSION + QUOTES[cid] for cid in ("C1.avg", "C1.glo", "C2.gap", "C2.cl", "C5.corrupt")})
QUOTES["C5.blur.ext"] = (
    "Not the study's severity: the same comparison for each other defocus-blur severity this sweep ran "
    "(the study's corrupt.py hard-codes severity 3), an extension of: " + QUOTES["C5.blur"]
)


def paper_mean(method: str, corruptions) -> float | None:
    """The study's mean drop of ``method`` over exactly these corruptions; None unless Table 1 has them all."""
    values = [PAPER_DROP.get((method, c)) for c in corruptions]
    return sum(values) / len(values) if values and None not in values else None


def missing_levels(corruptions) -> list[str]:
    """The corruptions Table 1 has no column for."""
    return [c for c in corruptions if c not in TABLE1_LEVELS]


def compare_text(a: str, b: str, corruptions) -> str:
    """``"18.8 > 14.2"``: the study's mean drops of a and b over the corruptions run, or why there are none."""
    pa, pb = paper_mean(a, corruptions), paper_mean(b, corruptions)
    if pa is None or pb is None:
        return _none(a, b, corruptions)
    return f"{pa:.1f} > {pb:.1f}"


def gap_text(a: str, b: str, glo, loc) -> str:
    """The study's gap Δ(a) - Δ(b) under global and under local shuffling, over the corruptions run."""
    gaps = [_gap(a, b, levels) for levels in (glo, loc)]
    if None in gaps:
        return _none(a, b, [*glo, *loc])
    miss = "; the study's own local gap misses this rule" if abs(gaps[1]) >= LOCAL_GAP_TOLERANCE else ""
    return f"global gap {gaps[0]:+.1f}, local gap {gaps[1]:+.1f} (needs |local| < {LOCAL_GAP_TOLERANCE:g}){miss}"


def contrast_text(a: str, b: str, glo, loc) -> str:
    """The study's ``[Δ(a,glo) - Δ(a,loc)] - [Δ(b,glo) - Δ(b,loc)]``, spelled out."""
    cells = [paper_mean(m, levels) for m in (a, b) for levels in (glo, loc)]
    if None in cells:
        return _none(a, b, [*glo, *loc])
    ag, al, bg, bl = cells
    return f"({ag:.1f} - {al:.1f}) - ({bg:.1f} - {bl:.1f}) = {(ag - al) - (bg - bl):+.1f}"


def downstream_text(backbone: str | None, a: str, b: str, corruptions) -> str:
    """``"ResNet-18: 9.9 > 7.6 (moco_v2)"``: the study's mean downstream drops of a and b over the
    corruptions run, on its backbone of that name (``_DOWNSTREAM``), or why there are none."""
    if backbone is None:
        return "n/a: the study fine-tuned ResNet-18 and ViT-S only"
    values = [[DOWNSTREAM_DROP.get((backbone, m, c)) for c in corruptions] for m in (a, b)]
    if not corruptions or None in values[0] + values[1]:
        lacking = missing_levels(corruptions) or [
            m for m in (a, b) if (backbone, m, TABLE1_LEVELS[0]) not in DOWNSTREAM_DROP
        ]
        return f"n/a: the study's {backbone} figure has no {', '.join(lacking) or 'level run'}"
    if sorted(corruptions) == sorted(TABLE1_LEVELS):  # its printed Avg (the bars are read off to +-0.1)
        pa, pb = (DOWNSTREAM_AVG[backbone][m] for m in (a, b))
    else:
        pa, pb = (sum(v) / len(v) for v in values)
    return f"{backbone}: {pa:.1f} > {pb:.1f} ({b})"


def uncorrected(text: str) -> str:
    """The paper column of a floor-corrected check: the study reports no floor, so its uncorrected value."""
    return f"no study value; uncorrected: {text}" if text else "no study value"


def matched(text: str) -> str:
    """The paper column of a matched-arm check: the study had no accuracy-matched arm; its Sup value."""
    return f"no matched arm in the study; vs its {SUPERVISED}: {text}" if text else "no matched arm in the study"


def _gap(a: str, b: str, levels) -> float | None:
    pa, pb = paper_mean(a, levels), paper_mean(b, levels)
    return None if pa is None or pb is None else pa - pb


def _none(a: str, b: str, corruptions) -> str:
    lacking = missing_levels(corruptions) or [m for m in (a, b) if m not in PAPER_AVG]
    return f"n/a: Table 1 has no {', '.join(lacking)}" if lacking else "n/a"
