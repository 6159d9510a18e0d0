"""Which trials and which sentence each check uses: C4 on the fine-tuned accuracy per backbone and
arm, C3's weakest setting, the primary CL arm, the study's own C2 misses, one-seed verdicts and
C6 within CL arms."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import paper
from analysis.claims import claim_checks, format_claims
from tests.analysis.conftest import drops_frame, frame, row

TABLE1 = {"glo_4": 15, "glo_8": 26, "loc_4": 26, "loc_8": 13}


def downstream(drops: dict[str, dict[str, float]], backbone: str = "resnet18", tuned: bool = True) -> pd.DataFrame:
    """Downstream trials (from a checkpoint, epochs 0) with these relative drops of ``finetune_acc``
    (or of knn_acc when not ``tuned``); knn_acc drops the other way round (sup 5, CL 30)."""
    tuned_frame = drops_frame(drops, **{"model.backbone": backbone, "model.init_checkpoint": "/x/state.pt"})
    frozen = drops_frame(
        {arm: dict.fromkeys(levels, 5 if arm == "supervised" else 30) for arm, levels in drops.items()}
    )
    df = tuned_frame.assign(**{"optim.epochs": 0})
    if tuned:
        df["finetune_acc"], df["knn_acc"] = df["knn_acc"], frozen["knn_acc"].to_numpy()
    return df


def test_c4__uses_the_fine_tuned_accuracy_not_the_frozen_one():
    df = downstream({"supervised": {"glo_4": 16, "loc_8": 16}, "moco_v2": {"glo_4": 12, "loc_8": 13}})
    c4 = row(claim_checks(df), "C4.downstream", "moco_v2")
    assert c4["verdict"] == "PASS" and c4["effect"] == pytest.approx(16 - 12.5) and "finetune_acc" in c4["claim"]
    assert c4["paper"] == "ResNet-18: 9.9 > 7.6 (moco_v2)"  # the study's §3.4 over glo_4 and loc_8 only


def test_c4__frozen_accuracies_are_not_the_studys_protocol():
    table = claim_checks(downstream({"supervised": {"glo_4": 16}, "moco_v2": {"glo_4": 12}}, tuned=False))
    c4 = row(table, "C4.downstream", "moco_v2")
    assert c4["verdict"] == "INCONCLUSIVE" and c4["missing"].startswith("finetune_acc")
    frozen = row(table, "C4.frozen", "moco_v2")
    assert frozen["verdict"] == "PASS" and frozen["effect"] == pytest.approx(16 - 12)
    assert frozen["quote"].startswith("Not the study's protocol")


def test_c4__a_network_trained_on_with_its_own_loss_is_not_the_studys_fine_tune():
    df = downstream({"supervised": {"glo_4": 16}, "moco_v2": {"glo_4": 12}}, tuned=False).assign(**{"optim.epochs": 5})
    table = claim_checks(df)
    assert row(table, "C4.downstream", "moco_v2")["verdict"] == "INCONCLUSIVE"
    retrained = row(table, "C4.retrained", "moco_v2")
    assert retrained["verdict"] == "PASS" and retrained["quote"].startswith("Not the study's protocol")


def test_c4__timm_weight_tags_name_one_backbone():
    sup = downstream({"supervised": dict.fromkeys(TABLE1, 39.3)}, "vit_small_patch16_224.augreg_in1k")
    dino = downstream({"dino": dict.fromkeys(TABLE1, 29.8)}, "vit_small_patch16_224.dino")
    c4 = row(claim_checks(pd.concat([sup, dino], ignore_index=True)), "C4.downstream", "dino")
    assert c4["verdict"] == "PASS" and c4["scope"] == "digits/vit_small_patch16_224"


def test_c8_gamma__a_floor_cell_decides_nothing():
    accs = {
        ("supervised", "ori"): [80.0] * 3,
        ("supervised", "gam_0.2"): [70.0, 70.5, 69.5],
        ("moco_v2", "ori"): [60.0] * 3,
        ("moco_v2", "gam_0.2"): [30.0, 30.5, 29.5],  # at the untrained network's 30
        ("untrained", "ori"): [30.0] * 3,
        ("untrained", "gam_0.2"): [30.0] * 3,
    }
    gamma = row(claim_checks(frame(accs)), "C8.gamma", "moco_v2")
    assert gamma["verdict"] == "INCONCLUSIVE" and gamma["missing"] == "moco_v2 × gam_0.2 above the untrained floor"


def test_c4__each_backbone_and_arm_is_its_own_check():
    # the study's shape on each backbone: R18 sup 16.3 > moco 12.8; ViT-S sup 39.3 > dino 29.8
    r18 = downstream({"supervised": dict.fromkeys(TABLE1, 16.3), "moco_v2": dict.fromkeys(TABLE1, 12.8)})
    vit = downstream(
        {"supervised": dict.fromkeys(TABLE1, 39.3), "dino": dict.fromkeys(TABLE1, 29.8)}, "vit_small_patch16_224"
    )
    table = claim_checks(pd.concat([r18, vit], ignore_index=True))  # no pretraining trial at all: no crash
    rows = table[table["id"] == "C4.downstream"]
    assert sorted(rows["scope"]) == ["digits/resnet18", "digits/vit_small_patch16_224"]
    assert (rows["verdict"] == "PASS").all()
    assert row(table, "C4.downstream", "dino")["effect"] == pytest.approx(39.3 - 29.8)
    assert row(table, "C4.downstream", "dino")["paper"] == "ViT-S: 39.3 > 29.8 (dino)"
    assert row(table, "C3.settings")["missing"] == "a second dataset or backbone (found none)"


def test_c1_avg__supcon_is_compared_with_moco_v2_whatever_the_alphabet():
    drops = {"supervised": TABLE1, "supcon": TABLE1, "byol": TABLE1, "moco_v2": TABLE1}
    claims = set(claim_checks(drops_frame(drops))["claim"])
    assert any(c.endswith("moco_v2 > supcon") for c in claims)
    assert not any(c.endswith("byol > supcon") for c in claims)


def test_c3__a_fail_in_one_setting_fails_the_claim():
    # digits: a wide interval across zero (lowest low end); other: a narrow one below zero
    noisy = drops_frame({"supervised": TABLE1, "moco_v2": TABLE1}, jitter={"moco_v2": [0, 20, -20]})
    reversed_ = {"supervised": TABLE1, "moco_v2": {k: v - 10 for k, v in TABLE1.items()}}
    table = claim_checks(pd.concat([noisy, drops_frame(reversed_, **{"data.dataset": "other"})], ignore_index=True))
    avg = table[(table["id"] == "C1.avg") & table["claim"].str.endswith("moco_v2 > supervised")].set_index("scope")
    assert avg.loc["digits", "verdict"] == "INCONCLUSIVE" and avg.loc["digits", "low"] < avg.loc["other", "low"]
    c3 = row(table, "C3.settings")
    assert c3["verdict"] == "FAIL" and c3["interval"] == "weakest setting: other"


def test_c2_gap__the_paper_column_says_when_the_study_misses_its_own_rule():
    dino = row(claim_checks(drops_frame({"supervised": TABLE1, "dino": TABLE1})), "C2.gap", "dino")
    assert dino["paper"].endswith("the study's own local gap misses this rule")  # DINO's Loc 8 gap: +5.2
    moco = row(claim_checks(drops_frame({"supervised": TABLE1, "moco_v2": TABLE1})), "C2.gap", "moco_v2")
    assert moco["paper"].endswith(f"(needs |local| < {paper.LOCAL_GAP_TOLERANCE:g})")


def test_format_claims__counts_the_verdicts_resting_on_one_seed():
    table = claim_checks(drops_frame({"supervised": TABLE1, "moco_v2": {k: 2 * v for k, v in TABLE1.items()}}, seeds=1))
    last = format_claims(table).splitlines()[-1]
    n = int((table["verdict"].isin(["PASS", "FAIL"]) & (table["n_seeds"] == 1)).sum())
    assert n > 0 and last.endswith(
        f"INCONCLUSIVE ({n} of the PASS/FAIL on one seed: no training-seed noise in their intervals)"
    )


def test_c6__uses_the_cl_arms_only():
    levels = (("ori", 80), ("glo_2", 70), ("glo_4", 60), ("glo_8", 50))
    accs = {(arm, c): [a] for arm in ("supervised", "moco_v2") for c, a in levels}
    unif = {("moco_v2", c): [u] for c, u in zip(dict(levels), (2.5, 2.3, 2.2, 2.0), strict=True)}
    unif.update({("supervised", c): [u] for c, u in zip(dict(levels), (2.0, 2.2, 2.3, 2.5), strict=True)})
    c6 = row(claim_checks(frame(accs, unif)), "C6.unif", "global")
    assert c6["effect"] == pytest.approx(1.0) and c6["interval"] == "bootstrap over 4 trials"


def test_drop_claims__the_paper_column_says_when_the_image_side_is_not_the_studys():
    table = claim_checks(drops_frame({"supervised": TABLE1, "moco_v2": TABLE1}, **{"data.image_size": 16}))
    assert (
        row(table, "C1.glo", "glo_4")["paper"] == "24.3 > 15.0 [Table 1 at 32 px; this sweep at 16 px: patch side 0.5x]"
    )
    same = claim_checks(drops_frame({"supervised": TABLE1, "moco_v2": TABLE1}, **{"data.image_size": 32}))
    assert row(same, "C1.glo", "glo_4")["paper"] == "24.3 > 15.0"
    # the teaser's uniformity is of 32 px images too
    assert row(table, "C5.corrupt", "moco_v2")["paper"].endswith("(moco_v2) [the study at 32 px; this sweep at 16 px]")
    assert row(same, "C5.corrupt", "moco_v2")["paper"].endswith("(moco_v2)")


def test_c4__two_weights_of_one_method_each_pair_their_own_clean_trial():
    in1k = downstream({"supervised": {"glo_4": 30}}, "vit_small_patch16_224.augreg_in1k")
    in21k = downstream({"supervised": {"glo_4": 30}}, "vit_small_patch16_224.augreg_in21k_ft_in1k")
    in21k["finetune_acc"] *= 0.75  # another clean accuracy (60), the same relative drop
    dino = downstream({"dino": {"glo_4": 20}}, "vit_small_patch16_224.dino")
    c4 = row(claim_checks(pd.concat([in1k, in21k, dino], ignore_index=True)), "C4.downstream", "dino")
    assert c4["effect"] == pytest.approx(30 - 20)


def test_c4__averages_table_1_levels_only_and_quotes_the_printed_avg():
    drops = {"supervised": {**dict.fromkeys(TABLE1, 16.3), "glo_2": 50}, "byol": dict.fromkeys([*TABLE1, "glo_2"], 14)}
    c4 = row(claim_checks(downstream(drops)), "C4.downstream", "byol")
    assert c4["effect"] == pytest.approx(16.3 - 14) and "glo_2" not in c4["claim"]
    assert c4["paper"] == "ResNet-18: 16.3 > 14.1 (byol)"  # the printed Avg; its four bars give 14.05


def test_downstream_text__names_what_the_study_lacks():
    assert paper.downstream_text(None, "supervised", "moco_v2", ["glo_4"]) == (
        "n/a: the study fine-tuned ResNet-18 and ViT-S only"
    )
    assert paper.downstream_text("ViT-S", "supervised", "moco_v2", ["glo_4"]) == (
        "n/a: the study's ViT-S figure has no moco_v2"
    )
