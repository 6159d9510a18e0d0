"""Fixtures for trial-level tests: the digits dataset loaded once, and tiny trial configs.

Tiny means seconds on 2 CPU cores: 20 training and 10 test images per class, a 1/8-width
ResNet-18 (64-d features), batch 32 and heads shrunk to 64 units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from trainables.config import TrialConfig
from trainables.data.datasets import ImageDataset, load_dataset
from trainables.methods import method_class

# Method hyperparameters shrunk for tests; applied only where the method's Params has the field,
# so a newly registered method gets tiny heads without being listed here.
SMALL_PARAMS = {
    "proj_hidden": 64,
    "proj_dim": 32,
    "pred_hidden": 64,
    "bottleneck_dim": 32,
    "num_prototypes": 64,
    "queue_size": 64,
    "bn_splits": 2,
}


def small_params(method: str) -> dict[str, Any]:
    """The SMALL_PARAMS that ``method`` has, e.g. ``{"proj_hidden": 64, "queue_size": 64, ...}``."""
    fields = {f.name for f in dataclasses.fields(method_class(method).Params)}
    return {k: v for k, v in SMALL_PARAMS.items() if k in fields}


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> ImageDataset:
    """The full digits dataset (1797 images, 32 px), decoded once into a temporary cache."""
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def tiny_flat(method: str, cache_dir, **overrides: Any) -> dict[str, Any]:
    """A seconds-long trial's flat config on 20 digits per class (``overrides`` win)."""
    flat = {
        "method": method,
        "data.dataset": "digits",
        "data.cache_dir": str(cache_dir),
        "data.train_per_class": 20,
        "data.test_per_class": 10,
        "model.width": 0.125,
        "optim.batch_size": 32,
        "optim.epochs": 2,
        "eval.knn_k": 20,
        "system.device": "cpu",
        **{f"method.{k}": v for k, v in small_params(method).items()},
    }
    return {**flat, **overrides}


@pytest.fixture
def tiny_cfg(tmp_path) -> Callable[..., TrialConfig]:
    """Factory: ``tiny_cfg("moco_v2", **{"optim.epochs": 3})`` -> a seconds-long TrialConfig."""

    def make(method: str = "supervised", **overrides: Any) -> TrialConfig:
        return TrialConfig.from_flat(tiny_flat(method, tmp_path / "cache", **overrides))

    return make
