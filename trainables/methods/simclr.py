"""SimCLR (Chen et al. 2020) and SupCon (Khosla et al. 2020): one loop, two positive sets.

Data-parallel: each rank's anchors (its shard's two views) against every rank's embeddings.
The embeddings are gathered with ``distributed.gather_batch``, whose backward all-reduces the
gradient of each embedding and keeps this rank's rows, so rank ``r`` backpropagates
``d(sum_s L_s)/dz_r`` through its own network, ``L_s`` being rank ``s``'s loss; DDP then averages
the ranks' weight gradients: ``(1/R) d(sum_s L_s)/dw``. ``L_s`` is the mean over rank ``s``'s
``2b`` anchors, so ``sum_s L_s`` is the sum over all ``2B = 2Rb`` anchors over ``2b``, i.e.
``R`` times the single process's loss ``L``: the update is ``dL/dw``, the single process's. (The
whole loss on every rank gives ``dL/dw`` too, ``sum_s L_s = R L`` again, but computes the
``2B x 2B`` logits on each rank where its own anchors need ``2b x 2B``.) Every anchor has a
positive (its other view), so every rank's mean is over ``2b`` anchors, SupCon's too. One process
calls the loss on its batch as before: no collective.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from trainables import distributed
from trainables.heads import mlp
from trainables.losses import nt_xent, supcon
from trainables.methods.base import Method, register_method


@dataclasses.dataclass(frozen=True)
class ContrastiveParams:
    proj_hidden: int = 2048
    proj_dim: int = 256
    temperature: float = 0.2
    proj_batchnorm: bool = True  # BN after the projector's hidden Linear


@dataclasses.dataclass(frozen=True)
class SupConParams(ContrastiveParams):
    proj_batchnorm: bool = False  # the study's SupCon projector: Linear-ReLU-Linear
    # "in": solo-learn's simclr_loss_func with label indexes (the study's); "out": Khosla Eq. 2.
    loss_form: str = "in"

    def __post_init__(self) -> None:
        if self.loss_form not in ("in", "out"):
            raise ValueError(f"method.loss_form {self.loss_form!r} is invalid; valid: in, out")


class _Contrastive(Method):
    Params = ContrastiveParams
    data_parallel = True  # gathers the embeddings (the module docstring)

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: ContrastiveParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim, batchnorm=params.proj_batchnorm)

    def project(self, views: list[Tensor]) -> list[Tensor]:
        return [self.projector(self.backbone(v)).float() for v in views]

    def global_batch(self, zs: list[Tensor]) -> tuple[list[Tensor], slice | None]:
        """Each view's embeddings (b, D) of this rank -> the whole batch's (B, D), and the samples whose
        views are this rank's anchors; a single process: ``zs`` itself and None (every sample)."""
        where = distributed.ranks()
        if where.size == 1:
            return zs, None
        return [distributed.gather_batch(z) for z in zs], distributed.shard_rows(zs[0].shape[0], where)


@register_method
class SimCLR(_Contrastive):
    """NT-Xent over 2B views. NOTE: LARS 0.4, wd 1e-5, proj 2048-256, T 0.2 (solo-learn CIFAR)."""

    name = "simclr"
    defaults = {
        "optimizer": "lars",
        "lr": 0.4,
        "weight_decay": 1e-5,
        "augmentation": "moco_v2",
        "exclude_bias_norm": True,
    }

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        (z1, z2), anchors = self.global_batch(self.project(views))
        return {"loss": nt_xent(z1, z2, self.params.temperature, anchors)}


@register_method
class SupCon(_Contrastive):
    """Label positives: every other view of the same class is a positive.

    NOTE: LARS 0.4, wd 1e-4, projector 2048-256 without BN and T 0.2 from the study's
    ``run_supcon_res_cifar10.sh`` (its 400 epochs are set in the gpu preset); the loss is
    solo-learn's ``simclr_loss_func`` with label indexes (``loss_form="in"``: the positives' sum
    inside the log, see ``losses.supcon``) and the projector solo-learn's ``supcon.py``.
    """

    name = "supcon"
    Params = SupConParams
    uses_labels = True
    defaults = {
        "optimizer": "lars",
        "lr": 0.4,
        "weight_decay": 1e-4,
        "augmentation": "moco_v2",
        "exclude_bias_norm": True,
    }

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        zs, anchors = self.global_batch(self.project(views))
        if anchors is not None:  # the whole batch's labels: positives on other ranks count too
            labels = distributed.gather(labels)
        return {"loss": supcon(zs, labels, self.params.temperature, self.params.loss_form, anchors)}
