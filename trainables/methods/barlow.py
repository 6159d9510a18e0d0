"""Barlow Twins (Zbontar et al. 2021): push the views' cross-correlation towards identity.

Data-parallel: the standardisation and the cross-correlation are the global batch's. Every rank
gathers the embeddings (``distributed.gather_batch``) and computes the whole batch's loss ``L``;
the gather's backward sums the ranks' gradients of each embedding (``R dL/dz``) and DDP averages
the ranks' weight gradients, so the update is ``dL/dw``, the single process's.

NOTE: solo-learn's ``barlow_loss_func`` standardises each rank's shard by itself (a fresh
``BatchNorm1d``) and averages the ranks' correlation matrices with an all-reduce outside autograd,
so its statistics are a shard's and its gradient ``1/R`` of its loss's; here both are the global
batch's, with gradient. The price is the ``B x D x D`` correlation on every rank instead of
``b x D x D``: ~6 GFLOP forward and backward at the study's batch 256 and 2048 dimensions.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from trainables import distributed
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
    data_parallel = True  # gathers the embeddings (the module docstring)
    defaults = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "augmentation": "byol", "exclude_bias_norm": True}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: BarlowParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim, layers=3)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        z1, z2 = (self.projector(self.backbone(v)).float() for v in views)
        if distributed.ranks().size > 1:
            z1, z2 = distributed.gather_batch(z1), distributed.gather_batch(z2)
        return {"loss": barlow_twins(z1, z2, self.params.lambd, self.params.scale_loss)}
