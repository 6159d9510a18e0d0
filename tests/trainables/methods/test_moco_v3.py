"""MoCo v3 specifics: the official heads, the momentum schedule, the loss it computes, and ViTs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.trainables.methods.conftest import batch, build, train
from trainables.backbone import build_backbone
from trainables.losses import moco_v3_loss
from trainables.methods import build_method, build_params

VIT = {"small_stem": False, "width": 0.0625, "img_size": 32, "patch_size": 8}  # 12-d features, 16 tokens


def _vit_moco_v3(seed: int = 0, **overrides) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, dim = build_backbone("vit_tiny_patch16_224", **VIT)
        small = {"proj_hidden": 64, "proj_dim": 32, "pred_hidden": 64}
        return build_method("moco_v3", backbone, dim, 10, {**small, **overrides})


def _layers(seq: nn.Sequential) -> list[tuple]:
    """(type, width, bias-free Linear) per module."""
    return [
        (type(m).__name__, getattr(m, "out_features", getattr(m, "num_features", None)), m.bias is None)
        if isinstance(m, nn.Linear)
        else (type(m).__name__, getattr(m, "num_features", None), False)
        for m in seq
    ]


def test_moco_v3__defaults_are_the_papers_vit_heads():
    p = build_params("moco_v3", {})
    assert (p.proj_hidden, p.proj_dim, p.pred_hidden, p.temperature) == (4096, 256, 4096, 0.2)
    assert (p.momentum_base, p.momentum_final) == (0.99, 1.0)
    method = _vit_moco_v3(proj_hidden=4096, proj_dim=256, pred_hidden=4096)
    assert _layers(method.projector) == [
        ("Linear", 4096, True),
        ("BatchNorm1d", 4096, False),
        ("ReLU", None, False),
        ("Linear", 4096, True),
        ("BatchNorm1d", 4096, False),
        ("ReLU", None, False),
        ("Linear", 256, True),
        ("BatchNorm1d", 256, False),
    ]  # three bias-free Linears for a ViT
    assert _layers(method.predictor) == [
        ("Linear", 4096, True),
        ("BatchNorm1d", 4096, False),
        ("ReLU", None, False),
        ("Linear", 256, True),
        ("BatchNorm1d", 256, False),
    ]
    for head in (method.projector, method.predictor):
        bns = [m for m in head if isinstance(m, nn.BatchNorm1d)]
        assert not bns[-1].affine and all(bn.affine for bn in bns[:-1])  # only the last BN lacks affine


def test_moco_v3__a_resnet_gets_a_two_layer_projector_and_proj_layers_overrides():
    resnet = build("moco_v3")
    assert sum(isinstance(m, nn.Linear) for m in resnet.projector) == 2
    assert isinstance(resnet.projector[-1], nn.BatchNorm1d)
    assert isinstance(resnet.predictor[-1], nn.Linear)  # the official MoCo_ResNet: no BN after the predictor
    assert sum(isinstance(m, nn.Linear) for m in build("moco_v3", proj_layers=3).projector) == 3
    with pytest.raises(ValueError, match=r"method\.proj_layers 1 is invalid; valid: 0"):
        build_params("moco_v3", {"proj_layers": 1})


def test_moco_v3__training_step_is_the_symmetric_loss_of_its_own_encoders(digits):
    method = build("moco_v3").train()
    views, labels = batch("moco_v3", digits)
    torch.manual_seed(0)
    loss = method.training_step(views, labels)["loss"]
    # Same BN batches (train mode), recomputed by hand: predictor(projector(backbone)) vs the key encoder.
    q = [method.predictor(method.projector(method.backbone(v))) for v in views]
    with torch.no_grad():
        k = [method.key_projector(method.key_backbone(v)) for v in views]
    torch.testing.assert_close(loss, moco_v3_loss(q[0], q[1], k[0], k[1], 0.2))
    assert not any(p.requires_grad for p in method.key_backbone.parameters())


def test_moco_v3__key_encoder_is_a_cosine_scheduled_ema_of_the_online_one(digits):
    method = build("moco_v3")
    views, labels = batch("moco_v3", digits)
    key0 = [p.detach().clone() for p in method.key_backbone.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(key0, method.backbone.parameters(), strict=True))
    train(method, views, labels, steps=1)  # one step; on_after_step(1.0) used momentum 0.99
    online = list(method.backbone.parameters())
    for k, k0, o in zip(method.key_backbone.parameters(), key0, online, strict=True):
        torch.testing.assert_close(k, 0.99 * k0 + 0.01 * o.detach())
    for progress, expected in [(0.0, 0.99), (0.5, 0.995), (1.0, 1.0)]:
        method.on_after_step(progress)
        assert method.momentum == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * progress)) * 0.01)
        assert method.momentum == pytest.approx(expected)


def test_moco_v3__tiny_vit_loss_decreases_on_a_fixed_batch(digits):
    method = _vit_moco_v3()
    views, labels = batch("moco_v3", digits)
    losses = train(method, views, labels, steps=8, lr=0.05)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.05, losses


def test_moco_v3__freeze_patch_embed_fixes_the_vits_patch_projection(digits):
    method = _vit_moco_v3(freeze_patch_embed=True)
    before = method.backbone.patch_embed.proj.weight.detach().clone()
    views, labels = batch("moco_v3", digits)
    train(method, views, labels, steps=2)
    assert torch.equal(method.backbone.patch_embed.proj.weight, before)
    assert not any(p.requires_grad for p in method.key_backbone.patch_embed.parameters())
    with pytest.raises(ValueError, match=r"method\.freeze_patch_embed True is invalid for a ResNet"):
        build("moco_v3", freeze_patch_embed=True)
