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
    """One view, ``CE(W f(x), y)``, trained end to end as the study's ``script/sup.sh``.

    The study trains its supervised baseline with the SSL methods' augmentation (random resized
    crop 0.08-1, colour jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale p 0.2, flip; one crop), SGD
    lr 0.4, wd 1e-5. ``data.augmentation=pad_crop`` gives the usual CIFAR recipe.

    NOTE: ``sup.sh`` passes ``--exclude_bias_n_norm``, but the study's ``solo/methods/base_old.py``
    hands that flag only to its LARS wrapper, which ``sup.sh`` does not use: under its plain SGD
    every backbone parameter is decayed. So ``optim.exclude_bias_norm`` stays false here.

    NOTE: lr 0.4 / wd 1e-5 are the study's ``script/sup.sh`` values (written for ResNet-50).
    """

    name = "supervised"
    Params = SupervisedParams
    n_views = 1
    uses_labels = True
    graph_safe = True
    data_parallel = True  # a mean of per-sample losses
    defaults = {"optimizer": "sgd", "lr": 0.4, "weight_decay": 1e-5, "augmentation": "study"}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: SupervisedParams) -> None:
        super().__init__(backbone, feature_dim, num_classes, params)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        logits = self.classifier(self.backbone(views[0]))
        loss = cross_entropy(logits.float(), labels, self.params.label_smoothing)
        return {"loss": loss, "train_acc": (logits.argmax(1) == labels).float().mean() * 100}
