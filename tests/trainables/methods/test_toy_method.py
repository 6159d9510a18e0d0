"""Adding a method is one small class: a rotation-prediction SSL method, defined and run here."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.heads import mlp
from trainables.loop import run_trial
from trainables.methods import METHODS, Method, register_method


@pytest.fixture
def rotation_method():
    """Registers ``rotation`` (Gidaris et al. 2018: predict 0/90/180/270 degrees) for one test."""

    @dataclasses.dataclass(frozen=True)
    class RotationParams:
        hidden: int = 128

    @register_method
    class Rotation(Method):
        name = "rotation"
        Params = RotationParams
        n_views = 1
        defaults = dict(optimizer="sgd", lr=0.1, weight_decay=5e-4, augmentation="supervised")

        def __init__(self, backbone, feature_dim, num_classes, params) -> None:
            super().__init__(backbone, feature_dim, num_classes, params)
            self.head = mlp(feature_dim, params.hidden, 4, batchnorm=False)

        def training_step(self, views, labels):
            x = views[0]
            k = torch.arange(len(x), device=x.device) % 4  # the rotation of each image
            rotated = torch.stack([im.rot90(int(r), (1, 2)) for im, r in zip(x, k, strict=True)])
            return {"loss": F.cross_entropy(self.head(self.backbone(rotated)).float(), k)}

    yield Rotation.name
    METHODS.pop(Rotation.name)


def test_toy_method__runs_through_run_trial_with_finite_metrics(rotation_method, tiny_cfg, digits):
    cfg = tiny_cfg(rotation_method, **{"method.hidden": 32})
    reports = []
    final = run_trial(cfg, reports.append, dataset=digits)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in reports)
    assert 0 <= final["knn_acc"] <= 100 and 0 <= final["probe_acc"] <= 100
    assert 0 <= final["ece"] <= 1
    assert math.isfinite(final["uniformity"]) and math.isfinite(final["alignment"])
    assert len(final["classwise_uniformity"]) == 10
    assert all(math.isfinite(v) for v in final["classwise_uniformity"])
    assert cfg.resolved().to_flat()["optim.lr"] == 0.1  # the toy's defaults reach the config


def test_toy_method__is_unregistered_after_its_test():
    assert "rotation" not in METHODS
