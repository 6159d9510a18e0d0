"""Synthetic trial frames with known answers, and a small fake MLflow store laid out like a sweep's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

CLASSES = 10
PER_CLASS = 100  # n_test = 1000


def frame(
    accs: dict[tuple[str, str], list[float]],
    uniformity: dict[tuple[str, str], list[float]] | None = None,
    epochs: int = 10,
    **config,
) -> pd.DataFrame:
    """One row per (arm, corruption, seed): ``accs[(arm, corruption)][seed]`` is knn_acc.

    ``arm == "untrained"`` makes a supervised trial with optim.epochs = 0.
    """
    rows = []
    for (arm, corruption), values in accs.items():
        for seed, acc in enumerate(values):
            u = (uniformity or {}).get((arm, corruption), [float("nan")] * len(values))[seed]
            rows.append(
                {
                    "method": "supervised" if arm == "untrained" else arm,
                    "data.corruption": corruption,
                    "system.seed": seed,
                    "optim.epochs": 0 if arm == "untrained" else epochs,
                    "data.dataset": "digits",
                    "model.width": 0.125,
                    "data.test_per_class": PER_CLASS,
                    "knn_acc": acc,
                    "uniformity": u,
                    "classwise_uniformity": [u / 2] * CLASSES,
                    **config,
                }
            )
    return pd.DataFrame(rows)


def drops_frame(
    drops: dict[str, dict[str, float]],
    seeds: int = 3,
    clean: dict[str, float] | None = None,
    jitter: dict[str, list[float]] | None = None,
    **config,
) -> pd.DataFrame:
    """Trials with exactly these relative drops (%): ``drops[arm][corruption]`` plus, per seed,
    ``jitter[arm][seed]`` points. Clean accuracy ``clean[arm]`` (default 80) on every seed."""
    accs = {}
    for arm, levels in drops.items():
        a_ori, extra = (clean or {}).get(arm, 80.0), (jitter or {}).get(arm, [0.0] * seeds)
        accs[(arm, "ori")] = [a_ori] * seeds
        for level, d in levels.items():
            accs[(arm, level)] = [a_ori * (1 - (d + extra[s]) / 100) for s in range(seeds)]
    return frame(accs, **config)


def row(table: pd.DataFrame, cid: str, contains: str = "") -> pd.Series:
    """The one claims row with this id whose claim text contains ``contains``."""
    found = table[(table["id"] == cid) & table["claim"].str.contains(contains, regex=False)]
    assert len(found) == 1, (cid, contains, table[["id", "claim"]])
    return found.iloc[0]


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory):
    """A sqlite MLflow store with experiment ``tiny`` (supervised ori + glo_4, seed 0, with a
    parent run) and ``dirty`` (glo_4 only): returns the tracking URI. Session-wide (creating
    a store costs seconds); tests only read it."""
    from mlflow.tracking import MlflowClient

    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    for name, corruptions in (("tiny", ("ori", "glo_4")), ("dirty", ("glo_4",))):
        exp = client.create_experiment(name, artifact_location=(tmp_path / "art" / name).as_uri())
        parent = client.create_run(
            exp, tags={"sweep": "parent", "sweep_name": "grid_patch_sizes", "version.torch": "x"}
        ).info.run_id
        for i, corruption in enumerate(corruptions):
            _child(client, exp, parent, f"t_{name}_{i}", corruption, acc=80.0 - 20 * i)
        client.set_terminated(parent)
    return uri


def _child(client, exp: str, parent: str, trial_id: str, corruption: str, acc: float) -> None:
    from mlflow.entities import Metric, Param

    tags = {"mlflow.parentRunId": parent, "ray_trial_id": trial_id, "method": "supervised", "corruption": corruption}
    run = client.create_run(exp, tags=tags).info.run_id
    flat = {
        "method": "supervised",
        "data.corruption": corruption,
        "system.seed": 0,
        "optim.epochs": 2,
        "data.test_per_class": 10,
        "data.image_size": None,
        "model.width": 0.125,
    }
    client.log_batch(
        run,
        params=[Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in flat.items()],
        metrics=[
            Metric("uniformity", 0.5, 0, 1),
            Metric("uniformity", 0.7, 0, 2),
            Metric("knn_acc", acc, 0, 2),
            Metric("intra_distance/0", 0.3, 0, 1),
            Metric("intra_distance/1", 0.2, 0, 2),
        ],
    )
    final = {
        "knn_acc": acc,
        "uniformity": 0.7,
        "classwise_uniformity": [0.1, 0.2],
        "feature_distance": [[0.1, 0.5], [0.5, 0.2]],
    }
    client.log_dict(run, final, "final_metrics.json")
    client.set_terminated(run)
