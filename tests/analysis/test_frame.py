"""Arms, families, budgets and test-set sizes of a trial frame."""

from __future__ import annotations

import math

import pandas as pd

from analysis.frame import annotate, arm_of, arm_order, budget_keys, in_family
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
        "supervised", "supcon", "byol", "moco_v2", "untrained"]


def test_arm_of__zero_epochs_from_init_is_untrained_from_a_checkpoint_keeps_its_method():
    assert arm_of("supervised", 0) == "untrained"
    assert arm_of("moco_v2", 0, "/ckpt/model.pt") == "moco_v2"
    assert arm_of("moco_v2", 28) == "moco_v2" and arm_of("moco_v2", 0, "") == "untrained"
