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
    A parameter whose weight or gradient norm is zero (a residual branch behind a zero-initialised
    BN at the first step) takes its raw gradient, without weight decay, as solo-learn's LARS does.

    Why not ``timm.optim.Lars``: measured in fp64 on a ResNet-18 over 20 steps (issue 26), it
    matches this class bit for bit at lr <= 1, but where a norm is zero it applies weight decay and
    scales by ``min(1, 1/lr)`` (a max |difference| of 3.4e-4 at lr 2), which is not the study's
    (solo-learn's) optimizer.

    ``foreach=True`` does the same arithmetic as a handful of ``torch._foreach_*`` kernels per
    group instead of ~10 per parameter, and never reads a norm back to the host (the per-parameter
    ``if w_norm > 0`` waits for the GPU at every parameter).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip: bool = True,
        eps: float = 1e-8,
        foreach: bool = False,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "eta": eta,
                "clip": clip,
                "eps": eps,
                "lars": True,
            },
        )
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if self.foreach:
                self._foreach_step(group)
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["lars"]:
                    d_p = p.grad  # a zero norm: the raw gradient (solo-learn)
                    w_norm, g_norm = p.norm(), p.grad.norm()
                    if w_norm > 0 and g_norm > 0:
                        local = group["eta"] * w_norm / (g_norm + group["weight_decay"] * w_norm + group["eps"])
                        if group["clip"]:
                            local = torch.clamp(local / group["lr"], max=1.0)
                        d_p = p.grad.add(p, alpha=group["weight_decay"]) * local
                else:
                    d_p = p.grad.add(p, alpha=group["weight_decay"])
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])

    def _foreach_step(self, group: dict) -> None:
        """The loop above for one group, vectorised over its parameters (same formulas)."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        wd, lr = group["weight_decay"], group["lr"]
        if group["lars"]:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            local = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
            if group["clip"]:
                local = torch.clamp(local / lr, max=1.0)
            # A zero norm: the raw gradient (decay 0, scale 1), as the loop and solo-learn do.
            scaled = (w_norm > 0) & (g_norm > 0)
            decay = torch.where(scaled, torch.full_like(local, wd), torch.zeros_like(local))
            d_p = torch._foreach_add(grads, torch._foreach_mul(params, list(decay.unbind())))
            torch._foreach_mul_(d_p, list(torch.where(scaled, local, torch.ones_like(local)).unbind()))
        else:
            d_p = torch._foreach_add(grads, params, alpha=wd)
        old = [i for i, p in enumerate(params) if "momentum_buffer" in self.state[p]]
        if old:
            bufs = [self.state[params[i]]["momentum_buffer"] for i in old]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, [d_p[i] for i in old])
        for i, p in enumerate(params):  # first step: the buffer starts as the update itself, as in the loop
            self.state[p].setdefault("momentum_buffer", d_p[i])
        torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-lr)


IMPLS = ("auto", "loop", "foreach", "fused")


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    exclude_bias_norm: bool = False,
    impl: str = "auto",
) -> torch.optim.Optimizer:
    """SGD, LARS or AdamW over the trainable parameters.

    ``exclude_bias_norm`` (solo-learn's ``exclude_bias_n_norm``): biases and norm parameters
    (every parameter with ndim <= 1), and those a timm model lists in ``no_weight_decay()`` (a ViT's
    ``pos_embed`` and ``cls_token``, as timm's optimizer factory and DeiT exclude them), get no weight decay and,
    under LARS, no adaptive scaling. AdamW (ViT recipes: MoCo v3, DeiT) takes ``momentum`` as beta1.
    ``impl``: ``auto`` is torch's own pick for SGD (foreach on CUDA, a loop on CPU) and the loop
    for LARS; ``loop``, ``foreach`` and ``fused`` (SGD only: one kernel for all parameters, and
    the only SGD that takes its learning rate from a device tensor, as a CUDA graph needs) force one.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown optimizer impl {impl!r}; valid: {', '.join(IMPLS)}")
    params = [p for p in model.parameters() if p.requires_grad]
    skip = {id(p) for p in params if p.ndim <= 1} | no_weight_decay_ids(model) if exclude_bias_norm else set()
    flat = [p for p in params if id(p) in skip]
    rest = [p for p in params if id(p) not in skip]
    if name in ("sgd", "adamw"):
        groups = [{"params": rest}] + ([{"params": flat, "weight_decay": 0.0}] if flat else [])
        kind = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}.get(impl, {})
        if name == "adamw":  # no momentum argument: optim.momentum is its beta1 (0.9 = torch's default)
            return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, **kind)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **kind)
    if name == "lars":
        if impl == "fused":
            raise ValueError("optimizer impl 'fused' is invalid for lars; valid: auto, loop, foreach")
        groups = [{"params": rest}] + ([{"params": flat, "lars": False, "weight_decay": 0.0}] if flat else [])
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=impl == "foreach")
    raise ValueError(f"unknown optimizer {name!r}; valid: adamw, lars, sgd")


def no_weight_decay_ids(model: nn.Module) -> set[int]:
    """ids of the parameters that timm models name in ``no_weight_decay()``: a ViT's position
    embedding and class token (3-d, so the ``ndim <= 1`` rule misses them). timm's ResNets declare
    none, so for them the rule alone decides."""
    ids = set()
    for module in model.modules():
        if callable(getattr(module, "no_weight_decay", None)):
            owned = dict(module.named_parameters(recurse=False))
            ids |= {id(owned[n]) for n in module.no_weight_decay() if n in owned}
    return ids


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warmup from 3e-5 to ``base_lr``, then cosine to 0 (solo-learn ``warmup_cosine``)."""
    if step < warmup_steps:
        return WARMUP_START_LR + (base_lr - WARMUP_START_LR) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr; a tensor lr (a captured CUDA graph reads it there) is written in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
