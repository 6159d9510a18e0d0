"""Barlow Twins (Zbontar et al. 2021): push the views' cross-correlation towards identity."""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from trainables.heads import mlp
from trainables.losses import barlow_twins
from trainables.methods.base import Method, register_method


@dataclasses.dataclass(frozen=True)
class BarlowParams:
    proj_hidden: int = 2048
    proj_dim: int = 2048
    lambd: float = 0.0051
    scale_loss: float = 0.1


@register_method
class BarlowTwins(Method):
    """NOTE: LARS lr 0.3, wd 1e-4, 3-layer 2048 projector, scale 0.1 from the study's ``barlow.sh``."""

    name = "barlow_twins"
    Params = BarlowParams
    defaults = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "augmentation": "byol", "exclude_bias_norm": True}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: BarlowParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim, layers=3)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        z1, z2 = (self.projector(self.backbone(v)).float() for v in views)
        return {"loss": barlow_twins(z1, z2, self.params.lambd, self.params.scale_loss)}
