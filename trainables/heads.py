"""Projection / prediction heads as declarative MLPs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def mlp(
    in_dim: int,
    hidden: int,
    out: int,
    *,
    layers: int = 2,
    batchnorm: bool = True,
    last_bn: bool = False,
    activation: Callable[[], nn.Module] = _relu,
    bias: bool = True,
) -> nn.Sequential:
    """Linear(-BN)-activation blocks then a Linear: (B, in_dim) -> (B, out).

    Args:
        layers: number of Linear layers (>= 1).
        batchnorm: BN after every hidden Linear (SimCLR/BYOL/Barlow heads have it; MoCo v2's has not).
        last_bn: BN without affine after the last Linear (Barlow Twins' projector).
        activation: makes each hidden block's non-linearity (ReLU; DINO's head uses ``nn.GELU``).
        bias: Linear biases (MoCo v3 has none: a BN follows every Linear and would cancel them).
    """
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden, bias=bias)] + ([nn.BatchNorm1d(hidden)] if batchnorm else []) + [activation()]
        dim = hidden
    mods.append(nn.Linear(dim, out, bias=bias))
    if last_bn:
        mods.append(nn.BatchNorm1d(out, affine=False))
    return nn.Sequential(*mods)
