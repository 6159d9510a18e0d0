"""Claim checks on frames built to pass, to fail, and to be inconclusive (the table as a whole;
the re-specified C1/C2/C7 checks in test_drop_claims.py, C5.train in test_geometry_claims.py)."""

from __future__ import annotations

import math

import pytest

from analysis import stats
from analysis.claims import claim_checks, format_claims
from analysis.drops import relative_drops
from analysis.evidence import COLUMNS, drop_contrast, value_contrast
from analysis.frame import annotate
from analysis.paper import QUOTES
from tests.analysis.conftest import frame, row

LEVELS = ("glo_4", "glo_8", "loc_4", "loc_8")


def sweep(sup_drop: dict, cl_drop: dict, seeds=(0, 1, 2), clean=80.0, **kwargs):
    """Accuracies giving the wanted relative drops (%), with +-0.5 point seed noise."""
    noise = [0.0, 0.5, -0.5][: len(seeds)]
    accs = {}
    for arm, d in (("supervised", sup_drop), ("moco_v2", cl_drop)):
        accs[(arm, "ori")] = [clean + e for e in noise]
        for level, drop in d.items():
            accs[(arm, level)] = [(clean + e) * (1 - drop / 100) + e for e in noise]
    return frame(accs, **kwargs)


def test_claims__cl_dropping_more_under_global_shuffling_passes():
    table = claim_checks(sweep({c: 15 for c in LEVELS}, {"glo_4": 25, "glo_8": 32, "loc_4": 15, "loc_8": 15}))
    avg = row(table, "C1.avg", "moco_v2 > supervised")
    assert avg["verdict"] == "PASS" and avg["effect"] == pytest.approx((10 + 17) / 4, abs=0.3)
    assert row(table, "C1.glo", "glo_8")["verdict"] == "PASS"
    gap = row(table, "C2.gap")  # the sentence's cells: global gap 25 - 15 at glo_4; the loc_8 gap 15 - 15 = 0
    assert gap["verdict"] == "PASS" and gap["effect"] == pytest.approx(25 - 15, abs=0.3)
    assert row(table, "C2.cl")["verdict"] == "PASS" and row(table, "C2.cl")["effect"] == pytest.approx(10, abs=0.3)
    ext = row(table, "C2.gap.ext")  # the extension: every global level against every local one
    assert ext["verdict"] == "PASS" and ext["effect"] == pytest.approx((25 + 32) / 2 - 15, abs=0.3)
    assert avg["interval"] == "t over 3 seeds" and avg["low"] > 0


def test_claims__sl_dropping_more_fails():
    table = claim_checks(sweep({c: 30 for c in LEVELS}, {c: 15 for c in LEVELS}))
    avg = row(table, "C1.avg", "moco_v2 > supervised")
    assert avg["verdict"] == "FAIL" and avg["high"] < 0 and avg["effect"] == pytest.approx(-15, abs=0.3)


def test_claims__a_missing_cell_is_inconclusive_and_named():
    table = claim_checks(sweep({"glo_4": 15, "glo_8": 26}, {"glo_4": 25}))
    glo8 = row(table, "C1.glo", "glo_8")
    assert glo8["verdict"] == "INCONCLUSIVE" and glo8["missing"] == "moco_v2 × glo_8" and math.isnan(glo8["effect"])
    assert row(table, "C2.gap")["missing"] == "moco_v2 × loc_8, supervised × loc_8"
    assert row(table, "C1.avg", "supcon > supervised")["verdict"] == "INCONCLUSIVE"


def test_claims__an_interval_spanning_zero_is_inconclusive():
    accs = {
        ("supervised", "ori"): [80, 80, 80],
        ("supervised", "glo_4"): [60, 64, 56],
        ("moco_v2", "ori"): [80, 80, 80],
        ("moco_v2", "glo_4"): [62, 58, 60],
    }
    glo4 = row(claim_checks(frame(accs)), "C1.glo", "glo_4")
    assert glo4["verdict"] == "INCONCLUSIVE" and glo4["low"] < 0 < glo4["high"] and not glo4["missing"]


def test_claims__one_seed_uses_the_binomial_error_of_the_accuracies():
    table = claim_checks(sweep({c: 10 for c in LEVELS}, {c: 40 for c in LEVELS}, seeds=(0,)))
    avg = row(table, "C1.avg", "moco_v2 > supervised")
    assert avg["verdict"] == "PASS" and avg["interval"] == "one seed: binomial sampling error"


def test_claims__untrained_reference_is_the_floor():
    accs = {("supervised", "ori"): [80, 81, 79], ("moco_v2", "ori"): [70, 71, 69], ("untrained", "ori"): [20, 21, 19]}
    unif = {
        ("supervised", "ori"): [2.0, 2.1, 1.9],
        ("moco_v2", "ori"): [2.8, 2.9, 2.7],
        ("untrained", "ori"): [1.0, 1.1, 0.9],
    }
    table = claim_checks(frame(accs, unif))
    floor = row(table, "S1.floor", "moco_v2")
    assert floor["verdict"] == "PASS" and floor["effect"] == pytest.approx(70 - 20)
    order = row(table, "C5.order", "moco_v2 > supervised")
    assert order["verdict"] == "PASS" and order["paper"] == "2.82 > 2.15 (moco_v2: 800 epochs; 2.34 at 200)"


def test_claims__every_row_quotes_the_study_text_it_tests():
    table = claim_checks(frame({("supervised", "ori"): [80], ("moco_v2", "ori"): [70], ("moco_v2", "glo_4"): [50]}))
    assert list(table.columns) == COLUMNS
    for cid, quote in zip(table["id"], table["quote"], strict=True):
        assert quote == QUOTES[cid if cid in QUOTES else cid.rsplit(".", 1)[0]], cid  # C1.avg.floor quotes C1.avg


def test_claims__uniformity_tracking_accuracy_within_a_family():
    accs = {
        (arm, c): [a + d]
        for arm, d in (("supervised", 0), ("moco_v2", -5))
        for c, a in (("ori", 80), ("glo_2", 70), ("glo_4", 60), ("glo_8", 50))
    }
    unif = {
        (arm, c): [u]
        for arm in ("supervised", "moco_v2")
        for c, u in (("ori", 2.5), ("glo_2", 2.3), ("glo_4", 2.2), ("glo_8", 2.0))
    }
    table = claim_checks(frame(accs, unif).assign(ece=[1, 2, 3, 1] * 2))
    unif_row = row(table, "C6.unif", "global")
    assert unif_row["verdict"] == "PASS" and unif_row["effect"] == pytest.approx(1.0)
    assert row(table, "C6.unif", "local")["missing"] == "local trials"
    assert row(table, "C6.ece", "global")["effect"] == pytest.approx(
        1 - abs(stats.correlation([80, 70, 60, 50] * 2, [1, 2, 3, 1] * 2, "spearman", ["a"] * 4 + ["b"] * 4))
    )


def test_drop_contrast__one_seed_delta_method_by_hand():
    d = relative_drops(frame({("a", "ori"): [80], ("a", "glo_4"): [60], ("b", "ori"): [50], ("b", "glo_4"): [40]}))
    ev = drop_contrast(d, {("a", "glo_4"): 1.0, ("b", "glo_4"): -1.0}, "knn_acc")
    se_a = stats.drop_se(80, stats.binomial_se(80, 1000), 60, stats.binomial_se(60, 1000))
    se_b = stats.drop_se(50, stats.binomial_se(50, 1000), 40, stats.binomial_se(40, 1000))
    assert ev.effect == pytest.approx(25 - 20)
    assert ev.high - ev.effect == pytest.approx(stats.Z * math.hypot(se_a, se_b))


def test_value_contrast__uniformity_with_one_seed_has_no_interval():
    df = annotate(frame({("a", "ori"): [80], ("b", "ori"): [50]}, {("a", "ori"): [2.0], ("b", "ori"): [1.0]}))
    ev = value_contrast(df, {("a", "ori"): 1.0, ("b", "ori"): -1.0}, "uniformity")
    assert ev.effect == 1.0 and ev.verdict == "INCONCLUSIVE" and "no interval" in ev.interval


def test_format_claims__one_line_per_check_and_a_count():
    table = claim_checks(sweep({c: 15 for c in LEVELS}, {c: 30 for c in LEVELS}))
    text = format_claims(table)
    assert len(text.splitlines()) == len(table) + 1
    assert text.splitlines()[0].startswith("PASS") and "C1.avg" in text and "paper: 24.5 > 20.3" in text
    assert text.splitlines()[-1].endswith("INCONCLUSIVE")


def test_claims__defocus_blur_keeps_uniformity_closer_than_patch_shuffling():
    cells = {("moco_v2", c): [50, 51] for c in ("ori", "glo_4", "defocusblur_3")}
    cells.update({("supervised", c): [60, 61] for c in ("ori", "glo_4")})
    uniformity = {
        ("moco_v2", "ori"): [2.8, 2.8],
        ("moco_v2", "glo_4"): [2.4, 2.45],
        ("moco_v2", "defocusblur_3"): [2.78, 2.8],
    }
    blur = row(claim_checks(frame(cells, uniformity)), "C5.blur")
    assert blur["verdict"] == "PASS" and blur["effect"] == pytest.approx(2.79 - 2.425)
    missing = row(claim_checks(sweep({"glo_4": 15}, {"glo_4": 25})), "C5.blur")
    assert missing["verdict"] == "INCONCLUSIVE" and missing["missing"] == "defocusblur_3 trials"


def test_claims__c5_blur_is_the_studys_severity_3_other_severities_extend_it():
    """A mild severity 1 must not rescue severity 3, the study's, which lowers uniformity more than
    glo_4 here (it was averaged in and the check passed)."""
    levels = {"ori": 2.8, "glo_4": 2.41, "defocusblur_1": 3.0, "defocusblur_3": 2.3}
    cells = {("moco_v2", c): [50, 51] for c in levels}
    table = claim_checks(frame(cells, {("moco_v2", c): [u, u + 0.01] for c, u in levels.items()}))
    study = row(table, "C5.blur", "moco_v2")
    assert study["verdict"] == "FAIL" and study["effect"] == pytest.approx(2.305 - 2.415)
    assert study["claim"].startswith("defocusblur_3 lowers")
    ext = row(table, "C5.blur.ext", "moco_v2")
    assert ext["verdict"] == "PASS" and ext["claim"].startswith("defocusblur_1 lowers")
    assert ext["quote"].startswith("Not the study's severity")


def test_claims__c5_corrupt_needs_every_table1_level_to_lower_uniformity():
    """The teaser lowers MoCo-v2's uniformity at each of Table 1's levels (2.82 -> 2.41-2.62): one
    level that raises it is a FAIL naming it, though the mean over the levels is lower. glo_2 (not
    a Table 1 level) gets its own C5.corrupt.ext row and never enters the study's."""
    levels = {"ori": 2.8, "glo_8": 2.3, "glo_4": 2.3, "loc_4": 2.4, "loc_8": 2.9, "glo_2": 1.0}
    cells = {("moco_v2", c): [50, 51] for c in levels}
    uniformity = {("moco_v2", c): [u, u + 0.02] for c, u in levels.items()}
    table = claim_checks(frame(cells, uniformity))
    study = row(table, "C5.corrupt", "moco_v2")
    assert study["verdict"] == "FAIL" and study["effect"] == pytest.approx(-0.1)
    assert study["interval"].endswith("weakest of 4 levels: loc_8") and "glo_2" not in study["claim"]
    assert "glo_4 2.41" in study["paper"]
    ext = row(table, "C5.corrupt.ext", "moco_v2")
    assert "glo_2" in ext["claim"] and ext["verdict"] == "FAIL" and ext["quote"].startswith("Not the study's levels")
    levels["loc_8"] = 2.6
    lowered = row(
        claim_checks(frame(cells, {("moco_v2", c): [u, u + 0.02] for c, u in levels.items()})), "C5.corrupt", "moco_v2"
    )
    assert lowered["verdict"] == "PASS" and lowered["effect"] == pytest.approx(0.2)
