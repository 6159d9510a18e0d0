"""Fine-tuning evaluation: the whole network trains (unlike the probe), the metric is a top-1 in
[0, 100], it learns, and a trial reports it with ``eval.finetune`` (tiny ResNet and tiny ViT)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from corruptions import parse
from trainables.backbone import SplitBatchNorm2d, build_backbone, plain_batchnorm, split_batchnorm
from trainables.config import EvalConfig, TrialConfig
from trainables.data.augment import build_augmentation
from trainables.data.batches import Pipeline
from trainables.evaluation.finetune import finetune
from trainables.loop import run_trial

VIT = {
    "model.backbone": "vit_tiny_patch16_224",
    "model.small_stem": False,
    "model.width": 0.0625,
    "model.img_size": 32,
    "model.patch_size": 8,
}
BACKBONES = {
    "resnet": lambda: build_backbone("resnet18", width=0.0625),
    "vit": lambda: build_backbone("vit_tiny_patch16_224", small_stem=False, width=0.0625, img_size=32, patch_size=8),
}


def _subset(split, n: int):
    return dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n])


def _finetune(digits, backbone, dim, n_train=256, n_test=128, aug="pad_crop", **cfg):
    pipeline = Pipeline(parse("ori"), build_augmentation(aug), 1, *digits.mean_std())
    eval_cfg = EvalConfig(finetune=True, **{"finetune_batch_size": 32, "finetune_epochs": 1, **cfg})
    train, test = _subset(digits.train, n_train), _subset(digits.test, n_test)
    return finetune(backbone, dim, 10, train, test, parse("ori"), pipeline, eval_cfg, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_finetune__trains_every_backbone_weight_and_reports_a_top1(digits, kind):
    torch.manual_seed(0)
    backbone, dim = BACKBONES[kind]()
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    out = _finetune(digits, backbone, dim)
    assert set(out) == {"finetune_acc", "finetune_loss"}
    assert 0 <= out["finetune_acc"] <= 100 and out["finetune_loss"] > 0
    moved = [n for n, p in backbone.named_parameters() if not torch.equal(p, before[n])]
    assert moved == list(before), f"untouched: {sorted(set(before) - set(moved))[:5]}"


def test_finetune__is_reproducible(digits):
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        backbone, dim = BACKBONES["resnet"]()
        results.append(_finetune(digits, backbone, dim, n_train=64, n_test=64))
    assert results[0] == results[1]


def test_finetune__learns_above_chance(digits):
    """64 digits, 10 epochs from a random 1/16-width ResNet, scored on the first 64 test digits
    (measured: 34% at lr 0.5 with pad-crop off; chance is 10%)."""
    torch.manual_seed(0)
    backbone, dim = BACKBONES["resnet"]()
    out = _finetune(digits, backbone, dim, n_train=64, n_test=64, aug="none", finetune_epochs=10, finetune_lr=0.5)
    assert out["finetune_acc"] > 20 and out["finetune_loss"] < 2.2  # ln(10) = 2.30 at chance


def test_finetune__a_non_finite_loss_raises_naming_the_lr(digits):
    torch.manual_seed(0)
    backbone, dim = BACKBONES["resnet"]()
    with pytest.raises(FloatingPointError, match=r"valid: a lower eval\.finetune_lr"):
        _finetune(digits, backbone, dim, finetune_lr=1e30)


def test_plain_batchnorm__undoes_split_batchnorm_with_the_same_state():
    torch.manual_seed(0)
    net, _ = build_backbone("resnet18", width=0.0625)
    split_batchnorm(net, 2)
    net.train()(torch.randn(4, 3, 16, 16))  # running statistics move away from their init
    state = {k: v.clone() for k, v in net.state_dict().items()}
    plain_batchnorm(net)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in net.modules())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_plain_batchnorm__undoes_sync_batchnorm_so_rank_0_fine_tunes_alone():
    """A data-parallel trial's backbone holds SyncBatchNorm (an all-gather per layer in training):
    the fine-tuned copy, trained by rank 0 alone, must hold plain BN with the same state."""
    from torch import nn

    from trainables.distributed import SyncBatchNorm, sync_batchnorm

    torch.manual_seed(0)
    net, _ = build_backbone("resnet18", width=0.0625)
    net.train()(torch.randn(4, 3, 16, 16))
    sync_batchnorm(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 3, 16, 16)
    want = net.eval()(x)
    plain_batchnorm(net)
    assert not any(isinstance(m, SyncBatchNorm) for m in net.modules())
    assert {type(m) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)} == {nn.BatchNorm2d}
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert torch.equal(net.eval()(x), want)
    net.train()(x)  # no process group: a SyncBatchNorm left in would still pass here, the type check would not


@pytest.mark.parametrize("backbone", ["resnet", "vit"])
def test_run_trial__eval_finetune_reports_finetune_acc_and_trains_a_copy(tiny_cfg, backbone, monkeypatch):
    import trainables.loop as loop

    built, seen = [], {}

    def build_model(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def spy(copy, *args, **kwargs):
        trial = built[0].backbone
        before = {k: v.clone() for k, v in trial.state_dict().items()}
        out = real_finetune(copy, *args, **kwargs)
        seen["copy"] = copy is not trial
        seen["trial_kept"] = all(torch.equal(before[k], v) for k, v in trial.state_dict().items())
        seen["copy_moved"] = any(not torch.equal(before[k], v) for k, v in copy.state_dict().items())
        return out

    real_build, real_finetune = loop.build_model, loop.finetune
    monkeypatch.setattr(loop, "build_model", build_model)
    monkeypatch.setattr(loop, "finetune", spy)
    extra = VIT if backbone == "vit" else {"model.width": 0.0625}
    cfg = tiny_cfg("moco_v2", **{"optim.epochs": 1, "eval.finetune": True, "eval.finetune_epochs": 1, **extra})
    reports = []
    final = run_trial(cfg, reports.append)
    assert 0 <= final["finetune_acc"] <= 100 and reports[-1]["finetune_acc"] == final["finetune_acc"]
    assert seen == {"copy": True, "trial_kept": True, "copy_moved": True}


def test_config__finetune_keys_are_validated_in_one_line():
    with pytest.raises(ValueError, match=r"eval\.finetune_optimizer 'adam' is invalid; valid: sgd, lars, adamw"):
        TrialConfig.from_flat({"eval.finetune_optimizer": "adam"}).resolved()
    with pytest.raises(ValueError, match=r"eval\.finetune_augmentation 'crop' is invalid; valid: .*pad_crop"):
        TrialConfig.from_flat({"eval.finetune": True, "eval.finetune_augmentation": "crop"}).resolved()
    with pytest.raises(ValueError, match=r"eval\.finetune_epochs 0 is invalid; valid: an integer >= 1"):
        TrialConfig.from_flat({"eval.finetune_epochs": 0}).resolved()
