"""Helpers for sweep tests: a real local Ray per test (shut down after) and MLflow queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import ray
from mlflow.tracking import MlflowClient
from PIL import Image

from sweeps.store import ensure_store
from sweeps.tracking import PARENT_TAG

TINY_YAML = str(Path(__file__).with_name("tiny.yaml"))

# Tiny, fast trials: 20/10 digits per class, 1/8-width ResNet-18, small batch and queue.
TINY = [
    "--set",
    "data.train_per_class=20",
    "--set",
    "data.test_per_class=10",
    "--set",
    "optim.batch_size=32",
    "--set",
    "model.width=0.125",
    "--set",
    "eval.probe=false",
]


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory):
    """root/{train,test}/<class>/*.JPEG: 3 classes, 12 + 4 RGB JPEGs each, sides 40-89 px, not square
    (a trial needs ``data.image_size``). Read only: every test shares it."""
    root = tmp_path_factory.mktemp("tiny_imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c in ("n01440764", "n01443537", "n01484850"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.JPEG", quality=80)
    return root


@pytest.fixture
def ray_shutdown():
    """Whatever Ray a test starts is shut down after it."""
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("SBL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "runs"


def argv(storage, *extra, epochs=2, report=False):
    """A sweep's command line for a test: tiny trials, and no HTML report at the end unless ``report``
    (the report is tested once, on the shared smoke sweep: ``tests/conftest.py``)."""
    return [
        "--storage-path",
        str(storage),
        "--epochs",
        str(epochs),
        *TINY,
        *([] if report else ["--no-report"]),
        *extra,
    ]


def runs(storage, experiment):
    """(parent run, [child runs]) of an experiment in the sweep's default sqlite store (created, if
    this is first, under the sweep's own lock: a test polling a starting sweep races its driver)."""
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    ensure_store(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    all_runs = client.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in all_runs if PARENT_TAG in r.data.tags]
    return client, parents, children


def final_metrics(client, run, folder) -> dict:
    """The ``final_metrics.json`` artifact of a trial's run."""
    path = client.download_artifacts(run.info.run_id, "final_metrics.json", str(folder))
    return json.loads(open(path).read())
