"""SimCLR (Chen et al. 2020) and SupCon (Khosla et al. 2020): one loop, two positive sets."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from trainables.heads import mlp
from trainables.losses import nt_xent, supcon
from trainables.methods.base import Method, register_method


@dataclasses.dataclass(frozen=True)
class ContrastiveParams:
    proj_hidden: int = 2048
    proj_dim: int = 256
    temperature: float = 0.2


class _Contrastive(Method):
    Params = ContrastiveParams

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: ContrastiveParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim)

    def project(self, views: list[Tensor]) -> list[Tensor]:
        return [self.projector(self.backbone(v)).float() for v in views]


@register_method
class SimCLR(_Contrastive):
    """NT-Xent over 2B views. NOTE: LARS 0.4, wd 1e-5, proj 2048-256, T 0.2 (solo-learn CIFAR)."""

    name = "simclr"
    defaults = {"optimizer": "lars", "lr": 0.4, "weight_decay": 1e-5, "augmentation": "moco_v2"}

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        z1, z2 = self.project(views)
        return {"loss": nt_xent(z1, z2, self.params.temperature)}


@register_method
class SupCon(_Contrastive):
    """Label positives (L^sup_out). NOTE: LARS 0.4, wd 1e-4, T 0.2 from the study's SupCon script."""

    name = "supcon"
    uses_labels = True
    defaults = {"optimizer": "lars", "lr": 0.4, "weight_decay": 1e-4, "augmentation": "moco_v2"}

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        z = torch.stack(self.project(views), dim=1)
        return {"loss": supcon(z, labels, self.params.temperature)}
