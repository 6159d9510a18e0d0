"""trainables.build: which numeric precision a trial computes in, the data it is built on (crops,\n``data.input_size``), its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corruptions import parse
from trainables import build
from trainables.build import (
    autocast,
    build_data,
    build_model,
    center_crop,
    eval_prepare,
    load_data,
    native_bf16,
    resolve_precision,
)
from trainables.config import TrialConfig
from trainables.data.augment import build_augmentation, normalize, to_float
from trainables.data.batches import Pipeline

CPU = torch.device("cpu")


def _cpu_flags() -> set[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (Linux, as on every machine this runs on)."""
    line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    return set(line.split(":", 1)[1].split())


def test_native_bf16__cpu_agrees_with_the_kernel_cpu_flags():
    flags = _cpu_flags()
    assert native_bf16(CPU) == bool({"avx512_bf16", "amx_tile"} & flags), sorted(f for f in flags if "avx" in f)


@pytest.mark.parametrize("native", [True, False])
def test_resolve_precision__auto_is_bf16_only_where_native_and_explicit_names_stay(monkeypatch, native):
    monkeypatch.setattr(build, "native_bf16", lambda device: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"


@pytest.mark.parametrize(
    ("precision", "native", "dtype"),
    [
        ("auto", True, torch.bfloat16),
        ("auto", False, torch.float32),
        ("bf16", False, torch.bfloat16),
        ("fp32", True, torch.float32),
    ],
)
def test_autocast__a_matmul_computes_in_the_resolved_precision(monkeypatch, precision, native, dtype):
    monkeypatch.setattr(build, "native_bf16", lambda device: native)
    cfg = TrialConfig.from_flat({"system.precision": precision})
    with autocast(cfg, CPU):
        out = torch.ones(4, 8) @ torch.ones(8, 2)
    assert out.dtype == dtype


def test_build_data__a_label_budget_shrinks_only_the_training_split(digits, tiny_cfg):
    from trainables.build import build_data, subset

    def data(**overrides):
        cfg = tiny_cfg("supervised", **overrides).resolved()
        return build_data(cfg, subset(digits, cfg.data), CPU)

    full, budget = data(), data(**{"data.labels_per_class": 5})
    assert len(full.train) == 200 and len(budget.train) == 50  # 20 and 5 of each of 10 classes
    assert torch.bincount(budget.train.labels).tolist() == [5] * 10
    # the kNN bank and the probe still see the whole training split, and the test split is unchanged
    assert len(budget.eval_train) == len(full.eval_train) == 200 and len(budget.eval_test) == len(full.eval_test)


def test_check_batch_fits__counts_the_split_build_data_trains_on(digits, tiny_cfg):
    """From the labels alone, the size build_data's pretraining split has: after train_per_class
    (20 a class here) and, for a label-using method only, labels_per_class; the unlabeled split for
    an SSL method where there is one. optim.epochs 0 trains nothing and always fits."""
    import dataclasses

    from trainables.build import build_data, check_batch_fits, subset

    def fits(method, data=digits, **overrides):
        cfg = tiny_cfg(method, **overrides).resolved()
        try:
            check_batch_fits(cfg, data)
        except ValueError as err:
            return str(err)
        return len(build_data(cfg, subset(data, cfg.data), CPU).train)  # the count it checked against

    assert fits("supervised", **{"optim.batch_size": 200}) == 200
    assert fits("supervised", **{"optim.batch_size": 201}) == (
        "optim.batch_size 201 is larger than the 200 training images; valid: <= 200"
    )
    assert fits("supervised", **{"optim.batch_size": 60, "data.labels_per_class": 5}).endswith("valid: <= 50")
    assert fits("supervised", **{"optim.batch_size": 999, "optim.epochs": 0}) == 200
    with_unlabeled = dataclasses.replace(digits, unlabeled=digits.train)  # 2,000 unlabeled images
    assert fits("moco_v2", with_unlabeled, **{"optim.batch_size": 1000}) == len(digits.train)
    assert fits("supervised", with_unlabeled, **{"optim.batch_size": 1000}).endswith("valid: <= 200")


def test_build_model__the_initial_backbone_does_not_depend_on_the_method():
    """Why a sweep keeps one untrained trial per corruption x seed (``sweeps.launch._unique``)."""
    states = []
    for method in ("supervised", "moco_v2", "byol"):
        cfg = TrialConfig.from_flat({"method": method, "model.width": 0.0625, "system.seed": 3}).resolved()
        states.append(build_model(cfg, 10, torch.device("cpu")).backbone.state_dict())
    for other in states[1:]:
        assert other.keys() == states[0].keys() and all(torch.equal(other[k], states[0][k]) for k in states[0])
    different_seed = TrialConfig.from_flat({"method": "supervised", "model.width": 0.0625, "system.seed": 4}).resolved()
    assert not torch.equal(
        build_model(different_seed, 10, torch.device("cpu")).backbone.state_dict()["conv1.weight"],
        states[0]["conv1.weight"],
    )


def test_center_crop__matches_torchvision_centercrop():
    from torchvision.transforms.v2 import functional as TF

    from trainables.build import center_crop

    images = torch.arange(2 * 3 * 9 * 8, dtype=torch.uint8).reshape(2, 3, 9, 8)
    for side in (4, 5, 8, 12):
        torch.testing.assert_close(center_crop(images, side), TF.center_crop(images, [min(side, 9), min(side, 8)]))


def test_build_data__crop_sizes_set_the_views_side_and_are_checked():
    from trainables.build import build_data, load_data

    cfg = TrialConfig(method="moco_v2").replace({"data.train_per_class": 2, "data.test_per_class": 1})
    data = load_data(cfg.resolved().data)
    side = data.image_size[0]
    td = build_data(cfg.replace({"data.crop_size": side - 2}).resolved(), data, torch.device("cpu"))
    views = td.pipeline.augment(td.train.images[:4], torch.Generator().manual_seed(0))
    assert views.shape[-2:] == (side - 2, side - 2)
    match = rf"data.eval_crop_size {side + 1} is invalid for {side}x{side} images; valid: 1 to {side}"
    with pytest.raises(ValueError, match=match):
        build_data(cfg.replace({"data.eval_crop_size": side + 1}).resolved(), data, torch.device("cpu"))


# ------------------------------------------------------------------------------ data.input_size


def _trial_data(tiny_cfg, **overrides):
    cfg = tiny_cfg("supervised", **{"data.train_per_class": 4, "data.test_per_class": 4, **overrides}).resolved()
    return cfg, build_data(cfg, load_data(cfg.data), CPU)


def _gens() -> dict[str, torch.Generator]:
    return {"corruption": torch.Generator().manual_seed(1), "augment": torch.Generator().manual_seed(2)}


@pytest.mark.parametrize("augmentation", ["pad_crop", "moco_v2"])
def test_build_data__input_size_none_leaves_views_and_eval_inputs_as_before(tiny_cfg, augmentation):
    """The pipeline and evaluation inputs as they were built before ``data.input_size`` existed."""
    keys = {"data.augmentation": augmentation, "data.crop_size": 28, "data.eval_crop_size": 30}
    cfg, td = _trial_data(tiny_cfg, **keys, **{"data.corruption": "glo_4"})
    before = Pipeline(td.pipeline.corruption, build_augmentation(augmentation, size=28), 1, td.mean, td.std)
    assert td.pipeline == before and td.pipeline.resize_to is None
    images = td.train.images[:8]
    assert torch.equal(td.pipeline(images, _gens())[0], before(images, _gens())[0])
    test = td.eval_test.images[:8]
    expected = normalize(to_float(center_crop(test, 30)), td.mean, td.std)
    assert torch.equal(eval_prepare(td, False, 30, cfg.data.input_size)(test), expected)


def test_build_data__input_size_twice_the_stored_side_upsamples_after_the_global_shuffle(tiny_cfg):
    """16 px digits, ``glo_4`` (4 x 4 patches of 4 px, fixed), network input 32 px: every input is the
    corrupted 16 px image upsampled, so each 8 px region is its patch upsampled and the region borders
    blend the *shuffled* neighbours. Resizing before the corruption gives the same region insides but
    blends the original neighbours at the borders: the whole-image comparison tells the two apart."""
    keys = {"data.image_size": 16, "data.input_size": 32, "data.corruption": "glo_4", "data.augmentation": "pad_crop"}
    cfg, td = _trial_data(tiny_cfg, **keys)
    assert [tuple(v.shape[-2:]) for v in td.pipeline(td.train.images[:8], _gens())] == [(32, 32)]
    assert tuple(eval_prepare(td, False, 12, 32)(td.eval_test.images[:8]).shape[-2:]) == (32, 32)  # crop, then resize
    corrupted = td.eval_test.images[:8]  # the fixed shuffle is applied once, at the stored 16 px
    assert corrupted.shape[-1] == 16
    x = eval_prepare(td, False, None, cfg.data.input_size)(corrupted)
    small = normalize(to_float(corrupted), td.mean, td.std)
    up = torch.nn.functional.interpolate
    torch.testing.assert_close(x, up(small, size=(32, 32), mode="bilinear", align_corners=False))
    for i in range(4):  # each region's inside (1 px from its border) is its own 4 px patch upsampled
        for j in range(4):
            patch = up(small[..., 4 * i : 4 * i + 4, 4 * j : 4 * j + 4], size=(8, 8), mode="bilinear")
            torch.testing.assert_close(x[..., 8 * i + 1 : 8 * i + 7, 8 * j + 1 : 8 * j + 7], patch[..., 1:7, 1:7])
    clean = normalize(to_float(load_data(cfg.data).test.images[:8]), td.mean, td.std)
    resized_first = parse("glo_4")(up(clean, size=(32, 32), mode="bilinear", align_corners=False), None)
    assert (x - resized_first).abs().amax() > 0.5  # so the whole-image check fails for the other order


def test_config__input_size_below_1_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^data\.input_size 0 is invalid; valid: an integer >= 1$"):
        TrialConfig.from_flat({"data.input_size": 0}).resolved()
    assert TrialConfig.from_flat({"data.input_size": "224"}).data.input_size == 224


def test_normalization__each_choice_gives_its_statistics(digits, tiny_cfg):
    from trainables.build import NORMALIZATIONS, normalization
    from trainables.config import CHOICES

    assert set(CHOICES["data.normalization"]) == set(NORMALIZATIONS)
    assert normalization(tiny_cfg(), digits) == digits.mean_std()  # the default
    imagenet = normalization(tiny_cfg(**{"data.normalization": "imagenet"}), digits)
    assert imagenet == ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))  # solo-learn's, the study's in100
    dino = tiny_cfg(**{"data.normalization": "pretrained", "model.backbone": "vit_small_patch16_224.dino"})
    assert normalization(dino, digits) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    augreg = tiny_cfg(**{"data.normalization": "pretrained", "model.backbone": "vit_tiny_patch16_224"})
    assert normalization(augreg, digits) == ((0.5,) * 3, (0.5,) * 3)  # timm's default tag, AugReg
    for bad, why in (("resnet18.nope", "pretrained tag 'nope' of 'resnet18' is unknown"), ("resnet200", "")):
        with pytest.raises(ValueError, match=why or r"^data.normalization 'pretrained' is invalid for model.backbone"):
            normalization(tiny_cfg(**{"data.normalization": "pretrained", "model.backbone": bad}), digits)
    # the trial's pipeline normalises with it
    td = build_data(tiny_cfg(**{"data.normalization": "imagenet"}).resolved(), digits, CPU)
    assert (td.mean, td.std) == imagenet and (td.pipeline.mean, td.pipeline.std) == imagenet


def test_normalization__statistics_of_other_channels_are_refused_in_one_line(digits, tiny_cfg):
    from trainables.build import normalization
    from trainables.data.datasets import ImageDataset, Split

    grey = Split(digits.train.images[:, :1], digits.train.labels, in_memory=True)
    one_channel = ImageDataset("grey", digits.classes, grey, grey)
    with pytest.raises(
        ValueError, match=r"^data.normalization 'imagenet' has 3 channels, the dataset 1; valid: dataset$"
    ):
        normalization(tiny_cfg(**{"data.normalization": "imagenet"}), one_channel)
    assert len(normalization(tiny_cfg(), one_channel)[0]) == 1
