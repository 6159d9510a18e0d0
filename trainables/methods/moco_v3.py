"""MoCo v3 (Chen, Xie, He 2021): query encoder + predictor vs a momentum key encoder, no queue."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import Tensor, nn

from trainables import distributed
from trainables.backbone import is_vit
from trainables.heads import mlp
from trainables.losses import moco_v3_loss
from trainables.methods.base import MomentumMethod, cosine_momentum, ema_update, register_method


@dataclasses.dataclass(frozen=True)
class MocoV3Params:
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096
    proj_layers: int = 0  # Linear layers of the projector; 0: 3 for a ViT, 2 for a ResNet (the paper's)
    temperature: float = 0.2
    momentum_base: float = 0.99
    momentum_final: float = 1.0
    # The paper's ViT stability trick (§4.2): a fixed random patch projection. Off by default.
    freeze_patch_embed: bool = False

    def __post_init__(self) -> None:
        if self.proj_layers < 0 or self.proj_layers == 1:
            raise ValueError(f"method.proj_layers {self.proj_layers} is invalid; valid: 0 (the paper's), or >= 2")


def moco_v3_mlp(in_dim: int, hidden: int, out: int, layers: int, last_bn: bool = True) -> nn.Sequential:
    """The official ``_build_mlp``: bias-free Linear-BN-ReLU blocks, a bias-free Linear, then (with
    ``last_bn``) BN without affine parameters: (B, in_dim) -> (B, out)."""
    return mlp(in_dim, hidden, out, layers=layers, batchnorm=True, last_bn=last_bn, bias=False)


@register_method
class MocoV3(MomentumMethod):
    """Symmetric ``ctr(q1, k2) + ctr(q2, k1)`` with in-batch negatives (``losses.moco_v3_loss``).

    Query side: backbone -> projector -> predictor; key side: EMA copies of backbone and
    projector, momentum 0.99 -> 1 on a half cosine (the official ``adjust_moco_momentum``, per step).
    The key encoder is updated after each optimizer step; the official code updates it at the
    start of the next step with the same momentum, which is the same sequence of weights.

    NOTE: heads (projector 4096-256 with 3 layers for a ViT and 2 for a ResNet, 2-layer predictor,
    bias-free Linears, last BN without affine, none after a ResNet's predictor) from
    facebookresearch/moco-v3 ``moco/builder.py``.
    T 0.2 is the paper's ViT value and solo-learn's CIFAR one (``scripts/pretrain/cifar/mocov3.yaml``);
    the paper's ResNet-50 uses 1.0. Optimizer defaults are solo-learn's CIFAR ones (LARS lr 0.3, wd
    1e-6, biases and norms excluded); the paper trains ViTs with AdamW (lr 1.5e-4 at batch 256,
    wd 0.1): ``optim.optimizer adamw``.
    """

    name = "moco_v3"
    Params = MocoV3Params
    # Data-parallel as the official code: each rank's queries against every rank's keys
    # (``concat_all_gather``), and its BNs over the global batch (sync BN), as one process sees it.
    data_parallel = True
    defaults = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "augmentation": "byol", "exclude_bias_norm": True}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: MocoV3Params) -> None:
        if params.freeze_patch_embed:
            if not is_vit(backbone):
                raise ValueError(
                    "method.freeze_patch_embed True is invalid for a ResNet backbone (it has no patch "
                    "embedding); valid: false, or a ViT backbone"
                )
            backbone.patch_embed.requires_grad_(False)
        super().__init__(backbone, feature_dim, num_classes, params)
        layers = params.proj_layers or (3 if is_vit(backbone) else 2)
        self.projector = moco_v3_mlp(feature_dim, params.proj_hidden, params.proj_dim, layers)
        # the official MoCo_ResNet drops the predictor's last BN (``_build_mlp(2, dim, mlp_dim, dim, False)``),
        # MoCo_ViT keeps it
        self.predictor = moco_v3_mlp(params.proj_dim, params.pred_hidden, params.proj_dim, 2, last_bn=is_vit(backbone))
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum = params.momentum_base

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        q1, q2 = (self.predictor(self.projector(self.backbone(v))) for v in views)
        with torch.no_grad():
            k1, k2 = (self.key_projector(self.key_backbone(v)) for v in views)
        where = distributed.ranks()
        if where.size > 1:  # keys carry no gradient: a plain all-gather
            all_k1, all_k2 = distributed.gather(k1), distributed.gather(k2)
            loss = moco_v3_loss(q1, q2, k1, k2, self.params.temperature, all_k1, all_k2, where.rank * k1.shape[0])
        else:
            loss = moco_v3_loss(q1, q2, k1, k2, self.params.temperature)
        return {"loss": loss, "momentum": torch.tensor(self.momentum)}

    def on_after_step(self, progress: float) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum, self.foreach_ema)
        ema_update(self.key_projector, self.projector, self.momentum, self.foreach_ema)
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
