"""Helpers for method tests: a tiny method around a 1/8-width ResNet-18 and a batch of digits."""

from __future__ import annotations

import torch
from torch import Tensor

from corruptions import parse
from tests.trainables.conftest import small_params
from trainables.backbone import build_backbone
from trainables.data.augment import build_augmentation
from trainables.data.batches import Pipeline
from trainables.data.datasets import ImageDataset
from trainables.methods import Method, build_method, method_class
from trainables.seeding import generators

BATCH = 16  # NOTE: with MoCo's bn_splits 2 (SMALL_PARAMS) each split BN sees 8 samples


def build(name: str, seed: int = 0, **overrides) -> Method:
    """The method around a 1/8-width ResNet-18 (64-d features), heads shrunk (SMALL_PARAMS)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, dim = build_backbone("resnet18", width=0.125)
        return build_method(name, backbone, dim, 10, {**small_params(name), **overrides})


def batch(name: str, data: ImageDataset, n: int = BATCH) -> tuple[list[Tensor], Tensor]:
    """``n_views`` x (n, 3, 32, 32) augmented, normalised views of the first ``n`` digits, and labels."""
    cls = method_class(name)
    pipeline = Pipeline(
        parse("ori"),
        build_augmentation(cls.defaults["augmentation"]),
        cls.n_views,
        *data.mean_std(),
    )
    return pipeline(data.train.images[:n], generators(0)), data.train.labels[:n]


def train(method: Method, views: list[Tensor], labels: Tensor, steps: int, lr: float = 0.1) -> list[float]:
    """``steps`` SGD steps on one fixed batch in the loop's order; returns the losses."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    method.train()
    losses = []
    for step in range(steps):
        loss = method.training_step(views, labels)["loss"]
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step(step / steps)
        opt.step()
        method.on_after_step((step + 1) / steps)
        losses.append(loss.item())
    return losses


def assert_same_state(a: dict, b: dict) -> None:
    """Equal keys and exactly equal values, recursing into extra-state dicts."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key
