"""Supervised baseline: cross-entropy on a linear head, trained end to end."""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from trainables.losses import cross_entropy
from trainables.methods.base import Method, register_method


@dataclasses.dataclass(frozen=True)
class SupervisedParams:
    label_smoothing: float = 0.0


@register_method
class Supervised(Method):
    """One view with the supervised recipe (pad-and-crop, flip), ``CE(W f(x), y)``.

    NOTE: lr 0.4 / wd 1e-5 are the study's ``script/sup.sh`` values (written for ResNet-50).
    """

    name = "supervised"
    Params = SupervisedParams
    n_views = 1
    uses_labels = True
    defaults = {"optimizer": "sgd", "lr": 0.4, "weight_decay": 1e-5, "augmentation": "supervised"}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: SupervisedParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        logits = self.classifier(self.backbone(views[0]))
        loss = cross_entropy(logits.float(), labels, self.params.label_smoothing)
        return {"loss": loss, "train_acc": (logits.argmax(1) == labels).float().mean() * 100}
