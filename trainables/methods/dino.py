"""DINO (Caron et al. 2021): self-distillation to a centred, sharpened EMA teacher."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.heads import mlp
from trainables.losses import dino_loss, update_center
from trainables.methods.base import Method, cosine_momentum, ema_update, register_method


@dataclasses.dataclass(frozen=True)
class DinoParams:
    proj_hidden: int = 2048
    bottleneck_dim: int = 256
    num_prototypes: int = 4096
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_fraction: float = 0.25
    center_momentum: float = 0.9
    momentum_base: float = 0.9995
    momentum_final: float = 1.0


class DinoHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes: (B, D) -> (B, K)."""

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = mlp(in_dim, hidden, bottleneck, layers=3)
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        self.prototypes.parametrizations.weight.original0.data.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))


@register_method
class DINO(Method):
    """Teacher temperature warms from 0.04 to 0.07 over the first quarter of training.

    NOTE: LARS lr 0.3, wd 1e-6, 4096 prototypes, tau 0.9995 -> 1, teacher T warm-up over 50 of
    200 epochs from the study's ``script/dino.sh`` (expressed here as a fraction of training).
    """

    name = "dino"
    Params = DinoParams
    defaults = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "augmentation": "byol"}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: DinoParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.head = DinoHead(feature_dim, params.proj_hidden, params.bottleneck_dim, params.num_prototypes)
        self.teacher_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(params.num_prototypes))
        self.momentum = params.momentum_base
        self.progress = 0.0

    def get_extra_state(self) -> dict:
        return {"momentum": self.momentum, "progress": self.progress}

    def set_extra_state(self, state: dict) -> None:
        self.momentum, self.progress = state["momentum"], state["progress"]

    def teacher_temperature(self) -> float:
        p = self.params
        ramp = min(1.0, self.progress / p.warmup_teacher_fraction) if p.warmup_teacher_fraction > 0 else 1.0
        return p.warmup_teacher_temperature + ramp * (p.teacher_temperature - p.warmup_teacher_temperature)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        student = [self.head(self.backbone(v)).float() for v in views]
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_backbone(v)).float() for v in views]
        loss = dino_loss(student, teacher, self.center, self.params.student_temperature, self.teacher_temperature())
        self.center.copy_(update_center(self.center, teacher, self.params.center_momentum))
        return {"loss": loss}

    def on_after_step(self, progress: float) -> None:
        ema_update(self.teacher_backbone, self.backbone, self.momentum)
        ema_update(self.teacher_head, self.head, self.momentum)
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
        self.progress = progress
