"""TrialConfig: flat round trip, unknown keys, method defaults and validation messages."""

from __future__ import annotations

import json

import pytest

from trainables.config import TrialConfig, coerce


def test_to_flat__round_trips_through_json_and_from_flat():
    cfg = TrialConfig(method="byol").replace(
        {
            "data.corruption": "glo_4",
            "model.width": 0.25,
            "optim.lr": 0.1,
            "eval.knn_k": 20,
            "system.seed": 3,
            "method.proj_dim": 64,
        }
    )
    flat = json.loads(json.dumps(cfg.to_flat()))
    back = TrialConfig.from_flat(flat)
    assert back.to_flat() == flat
    assert (back.data, back.model, back.optim, back.eval, back.system) == (
        cfg.data,
        cfg.model,
        cfg.optim,
        cfg.eval,
        cfg.system,
    )
    assert back.params == cfg.params and back.params.proj_dim == 64


def test_to_flat__has_every_section_and_method_params():
    flat = TrialConfig(method="moco_v2").to_flat()
    assert flat["method"] == "moco_v2"
    assert {k.split(".")[0] for k in flat if "." in k} == {
        "data",
        "model",
        "optim",
        "eval",
        "system",
        "method",
    }
    assert flat["method.queue_size"] == 32768 and flat["method.temperature"] == 0.2


def test_from_flat__unknown_key_raises_listing_known_keys():
    with pytest.raises(ValueError) as err:
        TrialConfig.from_flat({"method": "moco_v2", "optim.lrr": 0.1})
    msg = str(err.value)
    assert "optim.lrr" in msg and "known keys" in msg
    assert "optim.lr," in msg and "data.corruption" in msg and "method.queue_size" in msg


def test_from_flat__param_of_another_method_is_unknown():
    with pytest.raises(ValueError, match=r"method\.queue_size"):
        TrialConfig.from_flat({"method": "supervised", "method.queue_size": 64})


def test_replace__keeps_explicit_method_params_and_drops_them_on_method_change():
    cfg = TrialConfig(method="moco_v2").replace({"method.queue_size": 128})
    assert cfg.replace({"optim.epochs": 2}).params.queue_size == 128
    assert cfg.replace({"method": "supervised"}).method == "supervised"


@pytest.mark.parametrize(
    "method, optimizer, lr, weight_decay, augmentation",
    [
        ("moco_v2", "sgd", 0.3, 1e-4, "moco_v2"),
        ("byol", "lars", 1.0, 1e-5, "byol"),
        ("supervised", "sgd", 0.4, 1e-5, "study"),
        ("dino", "lars", 0.3, 1e-6, "byol"),
    ],
)
def test_resolved__fills_method_defaults(method, optimizer, lr, weight_decay, augmentation):
    cfg = TrialConfig(method=method)
    assert cfg.optim.optimizer is None and cfg.optim.lr is None and cfg.data.augmentation is None
    r = cfg.resolved()
    assert (r.optim.optimizer, r.optim.lr, r.optim.weight_decay) == (optimizer, lr, weight_decay)
    assert r.data.augmentation == augmentation
    assert r.to_flat()["optim.lr"] == lr  # the recorded flat config holds what ran


def test_resolved__keeps_explicit_values():
    r = (
        TrialConfig(method="byol")
        .replace({"optim.optimizer": "sgd", "optim.lr": 0.05, "data.augmentation": "moco_v2"})
        .resolved()
    )
    assert (r.optim.optimizer, r.optim.lr, r.optim.weight_decay, r.data.augmentation) == (
        "sgd",
        0.05,
        1e-5,
        "moco_v2",
    )


@pytest.mark.parametrize(
    "overrides, named, valid",
    [
        ({"optim.optimizer": "adam"}, "'adam'", "sgd, lars"),
        ({"system.precision": "fp16"}, "'fp16'", "auto, bf16, fp32"),
        ({"eval.knn_distance": "manhattan"}, "'manhattan'", "cosine, euclidean"),
        ({"data.corruption": "swirl_4"}, "'swirl_4'", "glo"),
        ({"data.eval_corruption": "glo_x"}, "'glo_x'", "grid"),
        ({"optim.batch_size": 0}, "optim.batch_size 0", ">= 1"),
        ({"optim.epochs": -1}, "optim.epochs -1", ">= 0"),
        ({"data.labels_per_class": 100}, "data.labels_per_class 100", "a method trained with labels"),
    ],
)
def test_validate__names_the_bad_value_and_the_valid_ones(overrides, named, valid):
    cfg = TrialConfig(method="moco_v2").replace(overrides)
    with pytest.raises(ValueError) as err:
        cfg.resolved()
    assert named in str(err.value) and valid in str(err.value)


def test_validate__unknown_method_lists_registered_ones():
    with pytest.raises(ValueError) as err:
        TrialConfig(method="mocov3").resolved()
    assert "'mocov3'" in str(err.value) and "moco_v2" in str(err.value) and "supervised" in str(err.value)


def test_validate__unknown_method_param_lists_valid_params():
    with pytest.raises(ValueError) as err:
        TrialConfig(method="moco_v2", method_params=(("queue", 16),)).resolved()
    assert "queue" in str(err.value) and "queue_size" in str(err.value)


def test_validate__default_config_and_zero_epochs_are_valid():
    TrialConfig().resolved().validate()
    TrialConfig().replace({"optim.epochs": 0}).resolved()  # 0: evaluate the untrained network


def test_validate__a_label_budget_below_one_is_refused():
    with pytest.raises(ValueError, match=r"data\.labels_per_class 0 is invalid; valid: null or an integer >= 1"):
        TrialConfig(method="supervised").replace({"data.labels_per_class": 0}).resolved()


def test_resolved__exclude_bias_norm_comes_from_the_method_and_stays_when_explicit():
    assert (
        TrialConfig(method="byol").resolved().optim.exclude_bias_norm is True
    )  # byol.sh: --lars --exclude_bias_n_norm
    assert TrialConfig(method="moco_v2").resolved().optim.exclude_bias_norm is False
    explicit = TrialConfig(method="moco_v2").replace({"optim.exclude_bias_norm": True}).resolved()
    assert explicit.to_flat()["optim.exclude_bias_norm"] is True


# --- coerce: every value is converted to its field's type or refused in one line ------------------


@pytest.mark.parametrize(
    "value, kind, expected",
    [
        ("5e-4", float, 5e-4),  # YAML 1.1 reads 5e-4 as a string
        ("1e6", float, 1e6),
        (1, float, 1.0),
        ("1e3", int, 1000),
        (64.0, int, 64),
        (True, bool, True),
        ("glo_4", str, "glo_4"),
        (None, float | None, None),
        ("1e-3", float | None, 1e-3),
        (3, int | None, 3),
    ],
)
def test_coerce__converts_to_the_field_type(value, kind, expected):
    out = coerce("k", value, kind)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "value, kind, message",
    [
        ("abc", float | None, "optim.lr 'abc' is invalid; valid: a number or null"),
        (1.5, int, "optim.lr 1.5 is invalid; valid: an integer"),
        ("big", int, "optim.lr 'big' is invalid; valid: an integer"),
        (True, int, "optim.lr True is invalid; valid: an integer"),
        (True, float, "optim.lr True is invalid; valid: a number"),
        (float("nan"), float, "optim.lr nan is invalid; valid: a number"),
        ("1e999", float, "optim.lr '1e999' is invalid; valid: a number"),
        ("maybe", bool, "optim.lr 'maybe' is invalid; valid: true or false"),
        (1, bool, "optim.lr 1 is invalid; valid: true or false"),
        (4, str, "optim.lr 4 is invalid; valid: a string"),
        (None, float, "optim.lr None is invalid; valid: a number"),
    ],
)
def test_coerce__refuses_naming_key_value_and_type(value, kind, message):
    with pytest.raises(ValueError) as err:
        coerce("optim.lr", value, kind)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optim.lr": "abc"}, "optim.lr 'abc' is invalid; valid: a number or null"),
        ({"optim.batch_size": 1.5}, "optim.batch_size 1.5 is invalid; valid: an integer"),
        ({"model.width": "abc"}, "model.width 'abc' is invalid; valid: a number"),
        ({"eval.probe": "maybe"}, "eval.probe 'maybe' is invalid; valid: true or false"),
        ({"system.seed": "x"}, "system.seed 'x' is invalid; valid: an integer"),
        ({"method.temperature": "abc"}, "method.temperature 'abc' is invalid; valid: a number"),
        ({"method.symmetric": "maybe"}, "method.symmetric 'maybe' is invalid; valid: true or false"),
        ({"system.seed": -1}, "system.seed -1 is invalid; valid: an integer >= 0"),
        ({"model.width": 0}, "model.width 0.0 is invalid; valid: a number > 0"),
        ({"eval.knn_k": 0}, "eval.knn_k 0 is invalid; valid: an integer >= 1"),
    ],
)
def test_from_flat__every_value_is_type_checked(overrides, message):
    with pytest.raises(ValueError) as err:
        TrialConfig(method="moco_v2").replace(overrides).resolved()
    assert str(err.value) == message


def test_from_flat__numeric_strings_become_numbers_in_the_flat_config():
    flat = (
        TrialConfig.from_flat(
            {
                "method": "moco_v2",
                "optim.weight_decay": "5e-4",
                "optim.batch_size": "64",
                "method.queue_size": "1e3",
                "model.width": 1,
            }
        )
        .resolved()
        .to_flat()
    )
    assert (flat["optim.weight_decay"], flat["optim.batch_size"], flat["method.queue_size"], flat["model.width"]) == (
        5e-4,
        64,
        1000,
        1.0,
    )
    assert type(flat["optim.batch_size"]) is int and type(flat["model.width"]) is float


def test_params__method_params_given_directly_are_type_checked_too():
    with pytest.raises(ValueError, match=r"^method\.queue_size 'many' is invalid; valid: an integer$"):
        TrialConfig(method="moco_v2", method_params=(("queue_size", "many"),)).resolved()
