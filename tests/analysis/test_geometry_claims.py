"""C5.train along the training curve (first evaluated epoch to the last), built to PASS, FAIL and
be INCONCLUSIVE; the untrained network (epoch 0) is not part of it."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import stats
from analysis.claims import claim_checks
from analysis.dynamics import OVERALL
from analysis.frame import annotate
from analysis.geometry_claims import EVERY_CLASS, training_changes, training_evidence
from tests.analysis.conftest import CLASSES, frame, row

FIRST = 2  # the first evaluated epoch in the history; the last is the trial's optim.epochs (10)


def curves(start: dict[str, list[float]], end: dict[str, list[float]], overall_rise: float = 0.5):
    """Trials on ori whose class-wise uniformity goes from ``start`` (epoch 2, from the history) to
    ``end`` (the final metrics) per seed; overall uniformity rises by ``overall_rise``; and an
    untrained trial with a class-wise uniformity far from both (epoch 0 of every curve)."""
    accs = {(arm, "ori"): [80.0] * len(v) for arm, v in end.items()} | {("untrained", "ori"): [20.0] * 3}
    unif = {(arm, "ori"): [2 * e for e in v] for arm, v in end.items()} | {("untrained", "ori"): [40.0] * 3}
    df = frame(accs, unif)  # class-wise uniformity = uniformity / 2 for every class
    df["trial_id"] = [f"t{i}" for i in range(len(df))]
    rows = []
    for _, trial in df[df["optim.epochs"] > 0].iterrows():
        s = start[trial["method"]][trial["system.seed"]]
        rows += [(trial["trial_id"], FIRST, f"classwise_uniformity/{c}", s) for c in range(CLASSES)]
        rows.append((trial["trial_id"], FIRST, "uniformity", trial["uniformity"] - overall_rise))
    history = pd.DataFrame(rows, columns=["trial_id", "epoch", "metric", "value"]).assign(run_id=None)
    return df, history


def checks(start, end) -> pd.DataFrame:
    df, history = curves(start, end)
    return claim_checks(df, history=history)


def test_training_changes__first_evaluated_epoch_to_the_last_not_from_the_untrained_network():
    df, history = curves({"moco_v2": [1.0, 1.1, 0.9]}, {"moco_v2": [1.5, 1.7, 1.3]})
    changes = training_changes(annotate(df), history).set_index(["arm", "seed", "quantity", "cls"])
    assert changes.loc[
        ("moco_v2", 1, "classwise_uniformity", 3), ["first", "last", "change"]
    ].tolist() == pytest.approx([FIRST, 10, 1.7 - 1.1])
    assert changes.loc[("moco_v2", 0, "uniformity", OVERALL), "change"] == pytest.approx(0.5)


def test_c5_train__cl_class_wise_uniformity_rising_passes_and_falling_fails():
    start, end = (
        {"moco_v2": [1.0, 1.1, 0.9], "supervised": [1.0, 1.1, 0.9]},
        {"moco_v2": [1.5, 1.7, 1.3], "supervised": [0.5, 0.7, 0.3]},
    )
    table = checks(start, end)
    rises = row(table, "C5.train", "class-wise uniformity of every class rises during training (moco_v2")
    _, _, low, high = stats.mean_interval([0.5, 0.6, 0.4])
    assert rises["verdict"] == "PASS" and (rises["effect"], rises["low"], rises["high"]) == pytest.approx(
        (0.5, low, high)
    )
    assert rises["interval"] == f"t over 3 seeds; epoch {FIRST} to 10; weakest of {CLASSES} classes: class 0"
    falls = row(table, "C5.train", "class-wise uniformity of every class falls during training (supervised")
    assert falls["verdict"] == "PASS" and falls["effect"] == pytest.approx(0.5)
    assert row(table, "C5.train", "overall uniformity rises during training (supervised")["verdict"] == "PASS"
    wrong = checks({"moco_v2": [1.5, 1.7, 1.3]}, {"moco_v2": [1.0, 1.1, 0.9]})
    fails = row(wrong, "C5.train", "class-wise uniformity of every class rises during training (moco_v2")
    assert fails["verdict"] == "FAIL" and fails["effect"] == pytest.approx(-0.5)


def test_c5_train__mixed_seeds_are_inconclusive():
    table = checks({"moco_v2": [1.0, 1.0, 1.0]}, {"moco_v2": [1.3, 0.8, 1.1]})
    mixed = row(table, "C5.train", "class-wise uniformity of every class rises during training (moco_v2")
    assert mixed["verdict"] == "INCONCLUSIVE" and mixed["low"] < 0 < mixed["high"] and not mixed["missing"]


def test_c5_train__without_the_history_only_the_end_is_known_and_it_says_so():
    df, _ = curves({"moco_v2": [1.0, 1.1, 0.9]}, {"moco_v2": [1.5, 1.7, 1.3]})
    table = claim_checks(df)
    r = row(table, "C5.train", "class-wise uniformity of every class rises during training (moco_v2")
    assert r["verdict"] == "INCONCLUSIVE" and r["missing"].startswith(
        "classwise_uniformity at a second evaluated epoch of moco_v2 × ori (eval.eval_every > 0"
    )
    assert (
        row(table, "C5.train", "class-wise uniformity of every class falls during training (supcon")["missing"]
        == "classwise_uniformity values of supcon × ori"
    )


def test_c5_train__one_class_against_the_study_fails_though_the_class_mean_moves_its_way():
    """Fig. A.1 draws every class's line rising for MoCo: nine classes rising by 0.5 and one
    falling by 0.3 is a FAIL naming that class, though their mean rises by 0.42."""
    df, history = curves({"moco_v2": [1.0, 1.1, 0.9]}, {"moco_v2": [1.5, 1.7, 1.3]})
    against = history["metric"] == "classwise_uniformity/3"
    history.loc[against, "value"] += 0.8  # starts 0.3 above where it ends
    r = row(
        claim_checks(df, history=history),
        "C5.train",
        "class-wise uniformity of every class rises during training (moco_v2",
    )
    assert r["verdict"] == "FAIL" and r["effect"] == pytest.approx(-0.3)
    assert r["interval"].endswith(f"weakest of {CLASSES} classes: class 3")


def test_c5_train__intra_class_distance_is_class_0s_as_the_study_plots_it():
    """Fig. A.1's lower panel plots d(f_t, D_0, D_0): class 0 rising decides for MoCo though class 1 falls."""
    changes = pd.DataFrame(
        [
            ("moco_v2", seed, "intra", c, 2, 10, change)
            for seed in range(3)
            for c, change in ((0, 0.3 + seed / 10), (1, -0.4))
        ],
        columns=["arm", "seed", "quantity", "cls", "first", "last", "change"],
    )
    class0 = training_evidence(changes, "moco_v2", "intra", 1, 0)
    assert class0.verdict == "PASS" and class0.effect == pytest.approx(0.4)
    assert training_evidence(changes, "moco_v2", "intra", 1, EVERY_CLASS).verdict == "FAIL"
