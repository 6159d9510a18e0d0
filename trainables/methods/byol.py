"""BYOL (Grill et al. 2020): online network + predictor regress an EMA target network."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from trainables.heads import mlp
from trainables.losses import byol_loss
from trainables.methods.base import MomentumMethod, cosine_momentum, ema_update, register_method


@dataclasses.dataclass(frozen=True)
class ByolParams:
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096
    momentum_base: float = 0.99
    momentum_final: float = 1.0


@register_method
class BYOL(MomentumMethod):
    """Symmetric loss ``byol(p1, z2') + byol(p2, z1')`` with an EMA target (tau 0.99 -> 1).

    NOTE: LARS lr 1.0, wd 1e-5, proj/pred 4096-256 from the study's ``script/byol.sh``.
    """

    name = "byol"
    Params = ByolParams
    data_parallel = True  # per-sample regression; its BNs see the global batch (sync BN)
    defaults = {"optimizer": "lars", "lr": 1.0, "weight_decay": 1e-5, "augmentation": "byol", "exclude_bias_norm": True}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: ByolParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim)
        self.predictor = mlp(params.proj_dim, params.pred_hidden, params.proj_dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = params.momentum_base

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        p = [self.predictor(self.projector(self.backbone(v))).float() for v in views]
        with torch.no_grad():
            z = [self.target_projector(self.target_backbone(v)).float() for v in views]
        loss = byol_loss(p[0], z[1]) + byol_loss(p[1], z[0])
        return {"loss": loss}

    def on_after_step(self, progress: float) -> None:
        ema_update(self.target_backbone, self.backbone, self.momentum, self.foreach_ema)
        ema_update(self.target_projector, self.projector, self.momentum, self.foreach_ema)
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
