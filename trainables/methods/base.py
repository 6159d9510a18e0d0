"""The method contract and its registry.

A method is a small ``nn.Module`` around a backbone. The training loop (``trainables.loop``)
exists once and only ever calls:

* ``training_step(views, labels) -> {"loss": scalar, ...}``: views are ``n_views`` tensors
  (B, C, H, W) float, already corrupted, augmented and normalised;
* ``embed(x) -> (B, D)``: backbone features used by every evaluation;
* ``before_optimizer_step(progress)``: between ``loss.backward()`` and ``optimizer.step()``, to
  edit gradients (DINO drops its prototypes' gradients early in training);
* ``on_after_step(progress)``: momentum/EMA updates, ``progress`` in [0, 1] of training.

Adding a method = one file with a ``@register_method`` class that sets ``Params`` (a frozen
dataclass of its hyperparameters with defaults), ``defaults`` (optimizer and augmentation
defaults) and implements ``training_step``. The contract tests then cover it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For methods without hyperparameters of their own."""


class Method(nn.Module):
    """Base class: holds the backbone; subclasses add heads, state and the loss."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    n_views: ClassVar[int] = 2
    uses_labels: ClassVar[bool] = False
    # Optimizer and augmentation defaults, overridable in the trial config.
    defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "sgd", "lr": 0.3, "weight_decay": 1e-4, "augmentation": "moco_v2",
    }

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.params = params

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) float -> (B, feature_dim) backbone features."""
        return self.backbone(x)

    def before_optimizer_step(self, progress: float) -> None:
        """Called after ``loss.backward()``, before ``optimizer.step()``; ``progress`` = finished
        steps / total steps, this one not counted (0 at the first step). A gradient set to None
        here skips the parameter's update altogether (no momentum, no weight decay)."""

    def on_after_step(self, progress: float) -> None:
        """Called after every optimizer step; ``progress`` = finished steps / total steps."""


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a half cosine (BYOL, solo-learn)."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, over parameters.

    Buffers (BN running statistics) are the target's own, computed in its forward passes,
    as in MoCo and solo-learn.
    """
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: register under ``cls.name``; raises on a duplicate or empty name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is already registered by {METHODS[cls.name].__name__}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """Look a method up; raises ValueError naming the bad name and the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_params(name: str, overrides: dict[str, Any]) -> Any:
    """The method's Params with ``overrides`` converted to their field types; unknown keys raise
    listing the known ones, a value of the wrong type names the key and the expected type."""
    from trainables.config import coerce_fields

    cls = method_class(name)
    known = [f.name for f in dataclasses.fields(cls.Params)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(known) or 'none'}")
    return cls.Params(**coerce_fields(cls.Params, overrides, "method."))


def build_method(name: str, backbone: nn.Module, feature_dim: int, num_classes: int, overrides: dict[str, Any] | None = None) -> Method:
    """Instantiate a registered method around ``backbone``."""
    return method_class(name)(backbone, feature_dim, num_classes, build_params(name, overrides or {}))
