"""DINO specifics: solo-learn's head, the frozen prototype layer and the teacher temperature schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.trainables.methods.conftest import batch, build, train
from trainables.methods import build_method


def test_head__is_solo_learns_bn_free_gelu_mlp_then_weight_normed_prototypes():
    head = build_method("dino", nn.Identity(), 512, 10).head  # the default (study) sizes
    layers = [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None)) for m in head.mlp]
    assert layers == [
        ("Linear", 512, 2048),
        ("GELU", None, None),
        ("Linear", 2048, 2048),
        ("GELU", None, None),
        ("Linear", 2048, 256),
    ]
    for linear in head.mlp[::2]:  # trunc_normal_(std=0.02) (cut at +-2, i.e. 100 std: a plain normal), zero bias
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert not linear.bias.any()
    gain = head.prototypes.parametrizations.weight.original0
    assert gain.shape == (4096, 1) and torch.equal(gain, torch.ones_like(gain)) and not gain.requires_grad
    assert head.prototypes.bias is None
    assert torch.allclose(head.prototypes.weight.norm(dim=1), torch.ones(4096))  # unit-norm prototypes


def test_head__batchnorm_and_a_trained_gain_are_options():
    head = build("dino", head_batchnorm=True, norm_last_layer=False).head
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.mlp) == 2
    assert head.prototypes.parametrizations.weight.original0.requires_grad


def test_before_optimizer_step__drops_prototype_gradients_only_in_the_first_fraction(digits):
    method = build("dino").train()
    views, labels = batch("dino", digits)
    prototypes = list(method.head.prototypes.parameters())
    for progress, frozen in [(0.0, True), (0.0049, True), (0.005, False), (0.5, False)]:
        method.zero_grad()
        method.training_step(views, labels)["loss"].backward()
        method.before_optimizer_step(progress)
        assert all((p.grad is None) == (frozen or not p.requires_grad) for p in prototypes), progress
        assert all(p.grad is not None for p in method.head.mlp.parameters())


@pytest.mark.parametrize("fraction", [0.0, 0.99])
def test_train__frozen_prototypes_do_not_move_at_all(digits, fraction):
    method = build("dino", freeze_last_layer_fraction=fraction)
    views, labels = batch("dino", digits)
    prototypes, first = method.head.prototypes.parametrizations.weight.original1, method.head.mlp[0].weight
    start, first_start = prototypes.detach().clone(), first.detach().clone()
    train(method, views, labels, steps=2)  # progress 0 and 0.5 at the two steps
    assert torch.equal(prototypes, start) == (fraction > 0.5)  # frozen: no momentum, no weight decay either
    assert not torch.equal(first, first_start)
    gain = method.head.prototypes.parametrizations.weight.original0
    assert torch.equal(gain, torch.ones_like(gain))  # norm_last_layer: never trained


@pytest.mark.parametrize(("progress", "temperature"), [(0.0, 0.04), (0.125, 0.055), (0.25, 0.07), (0.9, 0.07)])
def test_teacher_temperature__ramps_linearly_from_004_to_007_over_the_first_quarter(progress, temperature):
    method = build("dino")
    method.on_after_step(progress)
    assert method.teacher_temperature() == pytest.approx(temperature)


def test_dino__tiny_vit_step_is_finite_gradients_flow_and_loss_decreases(digits):
    from trainables.backbone import build_backbone

    torch.manual_seed(0)
    backbone, dim = build_backbone("vit_tiny_patch16_224", small_stem=False, width=0.0625, img_size=32, patch_size=8)
    small = {"proj_hidden": 64, "bottleneck_dim": 32, "num_prototypes": 64, "freeze_last_layer_fraction": 0.0}
    method = build_method("dino", backbone, dim, 10, small)
    views, labels = batch("dino", digits)
    method.train().training_step(views, labels)["loss"].backward()
    grads = {n: p.grad for n, p in method.backbone.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["patch_embed.proj.weight"].abs().sum() > 0 and grads["cls_token"].abs().sum() > 0
    method.zero_grad()
    losses = train(method, views, labels, steps=8, lr=0.05)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
