"""trainables.build: which numeric precision a trial computes in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainables import build
from trainables.build import autocast, build_model, native_bf16, resolve_precision
from trainables.config import TrialConfig

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
