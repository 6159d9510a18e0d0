"""DINO (Caron et al. 2021): self-distillation to a centred, sharpened EMA teacher."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables import distributed
from trainables.heads import mlp
from trainables.losses import dino_loss, teacher_mean, update_center
from trainables.methods.base import Method, cosine_momentum, ema_update, register_method


@dataclasses.dataclass(frozen=True)
class DinoParams:
    proj_hidden: int = 2048
    bottleneck_dim: int = 256
    num_prototypes: int = 4096
    head_batchnorm: bool = False  # solo-learn's use_bn_in_head
    norm_last_layer: bool = True  # prototypes' weight-norm gain fixed at 1, not trained
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07
    warmup_teacher_temperature: float = 0.04
    # Schedules in epochs in solo-learn, as fractions of training here (see the class note).
    warmup_teacher_fraction: float = 0.25  # 50 of 200 epochs
    freeze_last_layer_fraction: float = 0.005  # 1 of 200 epochs
    center_momentum: float = 0.9
    momentum_base: float = 0.9995
    momentum_final: float = 1.0


class DinoHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised prototypes: (B, D) -> (B, K).

    solo-learn's ``DINOHead`` (num_layers 3): Linear-GELU-Linear-GELU-Linear (BN after the hidden
    Linears only with ``batchnorm``), truncated-normal init (std 0.02, zero bias), then a
    bias-free, weight-normalised prototype layer whose gain starts at 1 and, with
    ``norm_last_layer``, stays there (not trained).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        bottleneck: int,
        prototypes: int,
        *,
        batchnorm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = mlp(in_dim, hidden, bottleneck, layers=3, batchnorm=batchnorm, activation=nn.GELU)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.prototypes = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        gain = self.prototypes.parametrizations.weight.original0
        gain.data.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.prototypes(F.normalize(self.mlp(x), dim=-1))


@register_method
class DINO(Method):
    """Student vs centred, sharpened EMA teacher; solo-learn's DINO as the study ran it.

    NOTE: LARS lr 0.3, wd 1e-6, head 2048-256, 4096 prototypes, tau 0.9995 -> 1 from the study's
    ``script/dino.sh``; head, temperatures (student 0.1, teacher 0.04 -> 0.07), centre momentum
    0.9 and the frozen prototype layer from solo-learn's ``solo/methods/dino.py`` defaults.

    NOTE (schedules as fractions): solo-learn warms the teacher temperature linearly over 50
    epochs (one value per epoch) and drops the prototypes' gradients in the first epoch
    (``freeze_last_layer`` 1). A method here sees only ``progress`` (finished steps / total), so
    both are fractions of training: 50/200 = 0.25 and 1/200 = 0.005. At the study's 200 epochs
    the freeze is exact (the prototypes first move at the first step of epoch 2) and the warm-up,
    ramped per step instead of per epoch, is at most 0.0006 off. Other lengths scale: a 24-epoch
    run freezes for 0.12 of an epoch and warms up over 6, where solo-learn's epoch counts would
    freeze for a whole epoch and, below 50 epochs, fail to build the temperature schedule.
    """

    name = "dino"
    Params = DinoParams
    # Data-parallel: the loss is a mean of per-sample terms (DDP's gradient averaging makes it the
    # global batch's) and the centre's EMA takes the global batch's teacher mean, averaged over the
    # ranks (the official code's all-reduce in ``update_center``); the centre, the temperature and
    # the momentum then move alike on every rank.
    data_parallel = True
    defaults = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "augmentation": "byol", "exclude_bias_norm": True}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: DinoParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.head = DinoHead(
            feature_dim,
            params.proj_hidden,
            params.bottleneck_dim,
            params.num_prototypes,
            batchnorm=params.head_batchnorm,
            norm_last_layer=params.norm_last_layer,
        )
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
        mean = teacher_mean(teacher)
        if distributed.ranks().size > 1:
            mean = distributed.average(mean)
        self.center.copy_(update_center(self.center, mean, self.params.center_momentum))
        return {"loss": loss}

    def before_optimizer_step(self, progress: float) -> None:
        """No update of the prototype layer early on (solo-learn ``on_after_backward``: grads set to None)."""
        if progress < self.params.freeze_last_layer_fraction:
            for p in self.head.prototypes.parameters():
                p.grad = None

    def on_after_step(self, progress: float) -> None:
        ema_update(self.teacher_backbone, self.backbone, self.momentum, self.foreach_ema)
        ema_update(self.teacher_head, self.head, self.momentum, self.foreach_ema)
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
        self.progress = progress
