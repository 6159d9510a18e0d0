"""Arms, families, budgets and test-set sizes of a trial frame."""

from __future__ import annotations

import math

import pandas as pd

from analysis.frame import (
    annotate,
    arm_of,
    arm_order,
    budget_keys,
    contrastive_arms,
    floor_keys,
    in_family,
    match_key,
    matched_arms,
)
from tests.analysis.conftest import frame


def test_annotate__epochs_zero_is_the_untrained_arm():
    df = annotate(frame({("supervised", "ori"): [80], ("untrained", "ori"): [20]}))
    assert list(df["arm"]) == ["supervised", "untrained"]
    assert list(df["method"]) == ["supervised", "supervised"]


def test_annotate__epochs_zero_from_a_checkpoint_is_a_downstream_probe_not_untrained():
    df = frame({("untrained", "ori"): [20, 21]})
    df["method"] = "moco_v2"
    df["model.init_checkpoint"] = ["/runs/pretrain/state.pt", None]
    assert list(annotate(df)["arm"]) == ["moco_v2", "untrained"]


def test_annotate__families_and_levels_from_the_corruption_spec():
    df = annotate(frame({("moco_v2", c): [50] for c in ("ori", "glo_4", "loc_8", "gam_0.2")}))
    assert list(df["family"]) == ["clean", "global", "local", "gamma"]
    assert list(df["level"][1:]) == [4.0, 8.0, 0.2]


def test_annotate__n_test_is_test_per_class_times_classes_unless_recorded():
    df = frame({("moco_v2", "ori"): [50, 60]})
    assert list(annotate(df)["n_test"]) == [1000, 1000]
    assert list(annotate(df.assign(n_test=[123, math.nan]))["n_test"]) == [123, 1000]


def test_in_family__ori_belongs_to_every_family_and_full_permutation_to_both():
    df = annotate(frame({("moco_v2", c): [50] for c in ("ori", "glo_4", "glo_32", "loc_8")}, **{"data.image_size": 32}))
    assert list(df["corruption"][in_family(df, "global")]) == ["ori", "glo_4", "glo_32"]
    assert list(df["corruption"][in_family(df, "local")]) == ["ori", "glo_32", "loc_8"]
    assert in_family(df, "all").all()


def test_budget_keys__config_columns_except_corruption_seed_and_paths():
    df = frame({("moco_v2", "ori"): [1]}, **{"data.cache_dir": "/x", "optim.lr": 0.3})
    keys = budget_keys(df)
    assert keys[0] == "method" and {"optim.epochs", "optim.lr", "model.width", "data.dataset"} <= set(keys)
    assert not {"data.corruption", "system.seed", "data.cache_dir"} & set(keys)
    assert budget_keys(pd.DataFrame({"method": ["a"], "corruption": ["ori"]})) == ["method"]


def test_arm_order__supervised_first_untrained_last():
    assert arm_order(["moco_v2", "untrained", "supcon", "supervised", "byol"]) == [
        "supervised",
        "supcon",
        "byol",
        "moco_v2",
        "untrained",
    ]


def test_arm_of__zero_epochs_from_init_is_untrained_from_a_checkpoint_keeps_its_method():
    assert arm_of("supervised", 0) == "untrained"
    assert arm_of("moco_v2", 0, "/ckpt/model.pt") == "moco_v2"
    assert arm_of("moco_v2", 28) == "moco_v2" and arm_of("moco_v2", 0, "") == "untrained"


def test_arm_of__timm_weights_are_a_pretrained_network_as_mlflow_and_tune_record_them():
    from analysis.frame import config_arm, downstream_rows

    assert arm_of("dino", 0, None, None, True) == "dino" and arm_of("dino", 0, None, None, "True") == "dino"
    assert arm_of("dino", 0, None, None, "False") == "untrained" and arm_of("dino", 0, None, None, False) == "untrained"
    assert config_arm({"method": "dino", "optim.epochs": 0, "model.pretrained": True}) == "dino"
    df = pd.DataFrame(
        {"model.init_checkpoint": [None, "/c.pt", None, None], "model.pretrained": [False, False, "True", None]}
    )
    assert downstream_rows(df).tolist() == [False, True, True, False]


def test_arm_of__labels_per_class_makes_a_method_at_n_arm():
    assert arm_of("supervised", 28, None, 100) == "supervised@100"
    assert arm_of("supervised", 28, None, 100.0) == "supervised@100"  # a column of ints and NaN reads as floats
    assert (
        arm_of("supervised", 28, None, math.nan) == "supervised"
        and arm_of("supervised", 28, None, None) == "supervised"
    )
    assert arm_of("supervised", 0, None, 100) == "untrained"


def test_annotate__a_labels_per_class_column_gives_the_matched_arm_its_own_row():
    full = frame({("supervised", "ori"): [80], ("moco_v2", "ori"): [70]})
    few = frame({("supervised", "ori"): [50], ("untrained", "ori"): [20]}, **{"data.labels_per_class": 100})
    df = annotate(pd.concat([full, few], ignore_index=True))
    assert list(df["arm"]) == ["supervised", "moco_v2", "supervised@100", "untrained"]
    assert contrastive_arms(df) == ["moco_v2"] and matched_arms(df) == ["supervised@100"]


def test_arm_order__matched_arms_follow_their_method_by_label_count():
    assert arm_order(["moco_v2", "supervised@500", "untrained", "supcon", "supervised@100", "supervised"]) == [
        "supervised",
        "supervised@100",
        "supervised@500",
        "supcon",
        "moco_v2",
        "untrained",
    ]


def test_floor_keys__the_network_and_its_evaluation_not_the_method_or_optimiser():
    df = annotate(frame({("moco_v2", "ori"): [1]}, **{"optim.lr": 0.3, "eval.knn_k": 20, "data.augmentation": "x"}))
    keys = floor_keys(df)
    assert keys[:2] == ["corruption", "seed"] and {"model.width", "eval.knn_k", "data.dataset"} <= set(keys)
    assert not {"method", "optim.lr", "optim.epochs", "data.augmentation"} & set(keys)


def test_match_key__none_and_nan_read_the_same_and_lists_are_values():
    df = pd.DataFrame({"a": [None, math.nan, 1], "b": [[1, 2], [1, 2], [3]]}, dtype=object)
    key = match_key(df, ["a", "b"])
    assert key[0] == key[1] != key[2]


def test_speed_levers__define_no_budget_and_no_floor_and_a_missing_bank_dtype_is_fp32():
    df = pd.DataFrame(
        {
            "method": ["moco_v2"] * 3,
            "system.optimizer_impl": ["auto", "fused", None],
            "eval.batch_size": [512, 1024, None],
            "eval.knn_k": [200] * 3,
            "eval.bank_dtype": ["fp32", None, "bf16"],
        }
    )
    assert "system.optimizer_impl" not in budget_keys(df) and "eval.batch_size" not in floor_keys(df)
    key = match_key(df, budget_keys(df))
    assert key[0] == key[1] != key[2]  # fused SGD and evaluation batches apart; a bf16 bank is another measurement


def test_floor_keys__the_evaluation_schedule_does_not_separate_a_trial_from_its_untrained_reference():
    """The accuracy-matched arm evaluates every 312 epochs, the untrained reference every 6: same final evaluation."""
    df = pd.DataFrame(
        {
            "method": ["supervised"] * 2,
            "eval.eval_every": [312, 6],
            "eval.knn_at_init": [True, False],
            "eval.knn_k": [200, 200],
            "model.width": [0.25, 0.25],
        }
    )
    keys = floor_keys(df)
    assert "eval.eval_every" not in keys and "eval.knn_at_init" not in keys and "eval.knn_k" in keys
    assert match_key(df, keys)[0] == match_key(df, keys)[1]
