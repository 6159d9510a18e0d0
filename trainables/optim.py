"""Optimizers and the learning-rate schedule (solo-learn's recipe: SGD or LARS, warmup + cosine)."""

from __future__ import annotations

import math

import torch
from torch import nn

WARMUP_START_LR = 3e-5  # solo-learn's warmup_start_lr


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    Per parameter: ``local_lr = eta * ||w|| / (||g|| + wd * ||w||)``, clipped to ``min(local_lr / lr,
    1)`` when ``clip``; weight decay enters the gradient before scaling. Groups with
    ``lars=False`` (biases and norms, solo-learn's ``exclude_bias_n_norm``) take plain SGD steps.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, clip: bool = True, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "eta": eta, "clip": clip, "eps": eps, "lars": True})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm, g_norm = p.norm(), p.grad.norm()
                    if w_norm > 0 and g_norm > 0:
                        local = group["eta"] * w_norm / (g_norm + group["weight_decay"] * w_norm + group["eps"])
                        if group["clip"]:
                            local = torch.clamp(local / group["lr"], max=1.0)
                        d_p = d_p * local
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float,
                    exclude_bias_norm: bool = False) -> torch.optim.Optimizer:
    """SGD or LARS over the trainable parameters.

    ``exclude_bias_norm`` (solo-learn's ``exclude_bias_n_norm``): biases and norm parameters
    (every parameter with ndim <= 1) get no weight decay and, under LARS, no adaptive scaling.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    flat = [p for p in params if p.ndim <= 1] if exclude_bias_norm else []
    rest = [p for p in params if not (exclude_bias_norm and p.ndim <= 1)]
    if name == "sgd":
        groups = [{"params": rest}] + ([{"params": flat, "weight_decay": 0.0}] if flat else [])
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        groups = [{"params": rest}] + ([{"params": flat, "lars": False, "weight_decay": 0.0}] if flat else [])
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: lars, sgd")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warmup from 3e-5 to ``base_lr``, then cosine to 0 (solo-learn ``warmup_cosine``)."""
    if step < warmup_steps:
        return WARMUP_START_LR + (base_lr - WARMUP_START_LR) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
