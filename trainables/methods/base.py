"""The method contract and its registry.

A method is a small ``nn.Module`` around a backbone. The training loop (``trainables.loop``)
exists once and only ever calls:

* ``training_step(views, labels) -> {"loss": scalar, ...}``: views are ``n_views`` tensors
  (B, C, H, W) float, already corrupted, augmented and normalised;
* ``embed(x) -> (B, D)``: backbone features used by every evaluation;
* ``before_optimizer_step(progress)``: between ``loss.backward()`` and ``optimizer.step()``, to
  edit gradients (DINO drops its prototypes' gradients early in training);
* ``on_after_step(progress)``: momentum/EMA updates, ``progress`` in [0, 1] of training.

A method whose whole step can be captured in one CUDA graph (``trainables.step``) sets
``graph_safe`` and splits ``on_after_step`` in two: ``graph_after_step()``, the device work, is
captured and replayed, reading its scalars from tensors; ``graph_scalars(progress)`` runs on the
host after every replay and writes the next step's scalars into those tensors (``graph_ready`` and
``graph_prepare`` come before the capture). Nothing in a
captured step may read a value back to the host or draw from a CPU generator.

A method that can train data-parallel (one trial over several processes, ``trainables.distributed``)
sets ``data_parallel``: each rank steps on its shard of the global batch and the update must be the
single process's on the whole batch. A loss that is a mean of per-sample terms given the batch's
BN statistics needs nothing more (the ranks synchronise BN, DDP averages the gradients); whatever
else couples the samples the method gathers itself, and only with more than one rank: MoCo's
keys, the embeddings of SimCLR, SupCon and Barlow Twins (``gather_batch``, with gradient), DINO's
teacher mean (``average``). ``tests/trainables/test_distributed.py`` trains every such method on two
ranks against one process. ``for_ranks`` adapts its parameters to the number of ranks.

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
    graph_safe: ClassVar[bool] = False  # the step can be one CUDA graph (see the module docstring)
    data_parallel: ClassVar[bool] = False  # it may train on several ranks (see the module docstring)
    foreach_ema: bool = False  # set from system.foreach_ema by trainables.build
    # Optimizer and augmentation defaults, overridable in the trial config.
    defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "sgd",
        "lr": 0.3,
        "weight_decay": 1e-4,
        "augmentation": "moco_v2",
    }

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.params = params

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        """``training_step``: what ``DistributedDataParallel`` calls (its gradient hooks need it)."""
        return self.training_step(views, labels)

    @classmethod
    def for_ranks(cls, params: Any, ranks: int) -> Any:
        """``params`` for a data-parallel trial over ``ranks`` processes; ValueError (one line) where the
        method cannot train so."""
        if not cls.data_parallel:
            valid = ", ".join(sorted(name for name, m in METHODS.items() if m.data_parallel))
            raise ValueError(
                f"method {cls.name!r} cannot train data-parallel ({ranks} workers per trial): it does not set "
                f"data_parallel (its loss may couple a batch's samples across ranks); valid methods: {valid}, "
                "or one worker per trial"
            )
        return params

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) float -> (B, feature_dim) backbone features."""
        return self.backbone(x)

    def before_optimizer_step(self, progress: float) -> None:
        """Called after ``loss.backward()``, before ``optimizer.step()``; ``progress`` = finished
        steps / total steps, this one not counted (0 at the first step). A gradient set to None
        here skips the parameter's update altogether (no momentum, no weight decay)."""

    def on_after_step(self, progress: float) -> None:
        """Called after every optimizer step; ``progress`` = finished steps / total steps."""

    def graph_ready(self) -> bool:
        """Whether the next step may be captured (MoCo waits for a full queue: fixed shapes)."""
        return True

    def graph_prepare(self) -> None:
        """Once, before capture: raise ValueError on settings that cannot be captured; set the
        scalar tensors that ``graph_after_step`` reads."""

    def graph_after_step(self) -> None:
        """The device part of ``on_after_step``, captured in the step's CUDA graph."""

    def graph_scalars(self, progress: float) -> None:
        """The host part of ``on_after_step`` after each replay: next step's scalars into tensors."""


class MomentumMethod(Method):
    """A method with EMA copies whose momentum (``self.momentum``, set in ``__init__`` and moved by
    ``on_after_step``) is checkpointed with the weights (BYOL, MoCo v3)."""

    momentum: float

    def get_extra_state(self) -> dict:
        return {"momentum": self.momentum}

    def set_extra_state(self, state: dict) -> None:
        self.momentum = state["momentum"]


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """EMA momentum rising from ``base`` to ``final`` on a half cosine (BYOL, solo-learn)."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def ema_update(target: nn.Module, online: nn.Module, momentum: float | Tensor, foreach: bool = False) -> None:
    """target <- momentum * target + (1 - momentum) * online, over parameters.

    Buffers (BN running statistics) are the target's own, computed in its forward passes,
    as in MoCo and solo-learn. ``foreach``: one ``torch._foreach_lerp_`` over all parameters,
    ``t + (1 - m) (o - t)``: the same value up to rounding (~1 ulp per step), a few kernels instead
    of two per parameter. A 0-d tensor ``momentum`` (a CUDA graph's input, read on the device):
    ``_foreach_mul_`` and ``_foreach_add_``, since ``_foreach_lerp_`` takes a scalar weight only
    as a host number (it would read the tensor back).
    """
    with torch.no_grad():
        targets, onlines = list(target.parameters()), list(online.parameters())
        if len(targets) != len(onlines):
            raise ValueError(f"ema_update: target has {len(targets)} parameters, online {len(onlines)}")
        if isinstance(momentum, Tensor):
            torch._foreach_mul_(targets, momentum)
            torch._foreach_add_(targets, torch._foreach_mul(onlines, 1 - momentum))
            return
        if foreach:
            torch._foreach_lerp_(targets, onlines, 1 - momentum)
            return
        for t, o in zip(targets, onlines, strict=True):
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
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for method {name!r}; valid: {', '.join(known) or 'none'}"
        )
    return cls.Params(**coerce_fields(cls.Params, overrides, "method."))


def build_method(
    name: str, backbone: nn.Module, feature_dim: int, num_classes: int, overrides: dict[str, Any] | None = None
) -> Method:
    """Instantiate a registered method around ``backbone``."""
    return method_class(name)(backbone, feature_dim, num_classes, build_params(name, overrides or {}))
