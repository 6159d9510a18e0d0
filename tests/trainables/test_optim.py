"""Optimizers and the warmup + cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from trainables.optim import LARS, WARMUP_START_LR, build_optimizer, lr_at, set_lr


def test_lr_at__linear_warmup_then_cosine_to_zero():
    base, total, warmup = 0.6, 100, 10
    assert lr_at(0, total, warmup, base) == pytest.approx(WARMUP_START_LR)
    assert lr_at(5, total, warmup, base) == pytest.approx(WARMUP_START_LR + (base - WARMUP_START_LR) / 2)
    assert lr_at(warmup, total, warmup, base) == pytest.approx(base)
    assert lr_at(55, total, warmup, base) == pytest.approx(base / 2)  # half-way through the cosine
    assert lr_at(total, total, warmup, base) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(total + 5, total, warmup, base) == pytest.approx(0.0, abs=1e-12)  # no cosine bounce


def test_lr_at__monotone_up_in_warmup_and_down_after():
    lrs = [lr_at(s, 50, 5, 1.0) for s in range(51)]
    assert all(a < b for a, b in itertools.pairwise(lrs[:6]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[5:]))


def test_lr_at__no_warmup_starts_at_base():
    assert lr_at(0, 10, 0, 0.3) == pytest.approx(0.3)
    assert lr_at(5, 10, 0, 0.3) == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def _toy(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(8, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 8, generator=g))
        model.bias.copy_(torch.randn(3, generator=g))
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(8, 3, generator=g) + 1.0
    return model, x, y


def test_lars__decreases_loss_on_a_toy_regression():
    model, x, y = _toy()
    opt = build_optimizer(model, "lars", lr=0.5, weight_decay=1e-5, momentum=0.9, exclude_bias_norm=True)
    assert isinstance(opt, LARS)
    losses = []
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_lars__scales_matrices_and_leaves_1d_params_plain_sgd():
    model, x, y = _toy()
    lr, wd, eta = 1.0, 1e-3, 0.02
    opt = build_optimizer(model, "lars", lr=lr, weight_decay=wd, momentum=0.9, exclude_bias_norm=True)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    assert opt.param_groups[1]["lars"] is False and opt.param_groups[1]["weight_decay"] == 0.0
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    nn.functional.mse_loss(model(x), y).backward()
    gw, gb = model.weight.grad.clone(), model.bias.grad.clone()
    opt.step()
    local = min(eta * w0.norm() / (gw.norm() + wd * w0.norm() + 1e-8) / lr, 1.0)
    assert local < 0.5  # the trust ratio is active here, so a missing scaling would show
    torch.testing.assert_close(model.weight.detach(), w0 - lr * local * (gw + wd * w0))
    torch.testing.assert_close(model.bias.detach(), b0 - lr * gb)  # no scaling, no decay


def test_lars__without_clip_uses_the_raw_trust_ratio():
    model, x, y = _toy(1)
    opt = LARS([{"params": [model.weight]}], lr=0.1, momentum=0.0, eta=0.02, clip=False)
    w0 = model.weight.detach().clone()
    nn.functional.mse_loss(model(x), y).backward()
    gw = model.weight.grad.clone()
    opt.step()
    torch.testing.assert_close(model.weight.detach(), w0 - 0.1 * 0.02 * w0.norm() / (gw.norm() + 1e-8) * gw)


def test_build_optimizer__sgd_skips_frozen_params():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 2 and all(p.requires_grad for p in params)


def test_build_optimizer__unknown_name_lists_valid():
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; valid: adamw, lars, sgd"):
        build_optimizer(nn.Linear(2, 2), "adam", lr=0.1, weight_decay=0.0, momentum=0.9)


def test_set_lr__sets_every_group():
    model, _, _ = _toy()
    opt = build_optimizer(model, "lars", lr=0.5, weight_decay=0.0, momentum=0.9, exclude_bias_norm=True)
    set_lr(opt, 0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_build_optimizer__exclude_bias_norm_leaves_biases_and_norms_undecayed(name):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    for p in model.parameters():
        p.grad = torch.ones_like(p)  # a plain SGD step moves each parameter by exactly -lr
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, name, lr=0.1, weight_decay=0.5, momentum=0.0, exclude_bias_norm=True)
    opt.step()
    plain_step = {n for n, p in model.named_parameters() if torch.equal(p, before[n] - 0.1)}
    assert plain_step == {"0.bias", "1.weight", "1.bias"}  # no decay (nor LARS scaling) for biases and norms
    plain = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.5, momentum=0.0)
    assert [g["weight_decay"] for g in plain.param_groups] == [0.5]


@pytest.mark.parametrize("clip", [True, False])
def test_lars__foreach_matches_the_per_parameter_loop(clip):
    """Same formulas, vectorised: 1e-6 relative after 5 steps, a zero-gradient matrix (trust ratio
    skipped) and a parameter without gradient (not updated at all) included."""

    def run(foreach: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 2))
        dead, frozen = model[2], model[3]  # dead: zero gradient; frozen: no gradient
        opt = build_optimizer(
            model,
            "lars",
            lr=0.5,
            weight_decay=1e-3,
            momentum=0.9,
            exclude_bias_norm=True,
            impl="foreach" if foreach else "loop",
        )
        for group in opt.param_groups:
            group["clip"] = clip
        x, y = torch.randn(16, 6), torch.randn(16, 5)
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model[1](model[0](x)), y).backward()
            dead.weight.grad = torch.zeros_like(dead.weight)
            frozen.weight.grad = frozen.bias.grad = None
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_set_lr__a_tensor_lr_is_written_in_place():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=torch.tensor(0.1))
    lr = opt.param_groups[0]["lr"]
    set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.25


@pytest.mark.parametrize("foreach", [False, True])
def test_lars__a_zero_gradient_norm_takes_the_raw_gradient_without_decay_as_solo_learn(foreach):
    """A residual branch behind a zero-initialised BN has zero gradient at the first step: solo-learn's
    LARS leaves it untouched (no decay); timm's Lars would decay it by lr * wd * min(1, 1/lr)."""
    model = nn.Linear(4, 3, bias=False)
    w0 = model.weight.detach().clone()
    model.weight.grad = torch.zeros_like(model.weight)
    opt = LARS([{"params": [model.weight]}], lr=2.0, momentum=0.9, weight_decay=1e-2, eta=0.02, foreach=foreach)
    opt.step()
    torch.testing.assert_close(model.weight.detach(), w0, rtol=0, atol=0)


def test_lars__loop_and_foreach_agree_in_fp64_on_a_resnet_with_zero_initialised_branches():
    import copy

    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10, zero_init_last=True).double()
    x, y = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    loop, vec = copy.deepcopy(model), copy.deepcopy(model)
    opts = [
        build_optimizer(m, "lars", lr=2.0, weight_decay=1e-5, momentum=0.9, exclude_bias_norm=True, impl=impl)
        for m, impl in ((loop, "loop"), (vec, "foreach"))
    ]
    for _ in range(3):
        for m, opt in zip((loop, vec), opts, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for a, b in zip(loop.parameters(), vec.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
