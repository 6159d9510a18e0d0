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


@pytest.fixture
def hook_recorder():
    """Registers ``hook_recorder``: a supervised head that records the loop's calls to its hooks."""

    @register_method
    class HookRecorder(Method):
        name = "hook_recorder"
        n_views = 1
        uses_labels = True
        defaults = dict(optimizer="sgd", lr=0.1, weight_decay=0.0, augmentation="pad_crop")
        events: list = []

        def __init__(self, backbone, feature_dim, num_classes, params) -> None:
            super().__init__(backbone, feature_dim, num_classes, params)
            self.head = torch.nn.Linear(feature_dim, num_classes)

        def training_step(self, views, labels):
            self.events.append(("step", None, self.head.weight.detach().clone()))
            return {"loss": F.cross_entropy(self.head(self.backbone(views[0])).float(), labels)}

        def before_optimizer_step(self, progress):
            self.events.append(
                ("before", progress, (self.head.weight.grad is not None, self.head.weight.detach().clone()))
            )

        def on_after_step(self, progress):
            self.events.append(("after", progress, self.head.weight.detach().clone()))

    HookRecorder.events = []
    yield HookRecorder
    METHODS.pop(HookRecorder.name)


def test_loop__calls_before_optimizer_step_between_backward_and_step(hook_recorder, tiny_cfg, digits):
    run_trial(
        tiny_cfg(hook_recorder.name, **{"eval.probe": False, "eval.eval_every": 0}), lambda m: None, dataset=digits
    )
    events = hook_recorder.events
    total = len(events) // 3  # 200 images / batch 32 = 6 steps per epoch, 2 epochs
    assert total == 12 and [e[0] for e in events] == ["step", "before", "after"] * total
    for i in range(total):
        (_, _, w_step), (_, progress, (has_grad, w_hook)), (_, after, w_after) = events[3 * i : 3 * i + 3]
        assert has_grad, "called after loss.backward()"
        assert torch.equal(w_hook, w_step) and not torch.equal(w_hook, w_after), "called before optimizer.step()"
        assert progress == pytest.approx(i / total) and after == pytest.approx((i + 1) / total)
