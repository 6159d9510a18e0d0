"""End-to-end sweeps through real Ray Tune and a real MLflow sqlite store, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import torch
import yaml

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.sweeps.conftest import TINY_YAML, argv, final_metrics, runs
from trainables.build import build_model, resolve_precision
from trainables.config import TrialConfig

pytestmark = pytest.mark.slow


def test_sweep__smoke_one_parent_and_one_child_run_per_trial(smoke_sweep, tmp_path):
    storage, out = smoke_sweep.storage, smoke_sweep.out
    assert smoke_sweep.code == 0, out[-3000:]
    client, parents, everything = runs(storage, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    untrained = [c for c in everything if c.data.params["optim.epochs"] == "0"]
    children = [c for c in everything if c.data.params["optim.epochs"] != "0"]
    assert len(children) == 6 and len(untrained) == 3  # 2 methods x {ori, glo_4, loc_4} + reference per corruption
    assert all(u.info.status == "FINISHED" for u in untrained)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["ray_trial_id"] for c in children}) == 6
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["method"] in ("supervised", "moco_v2")
        assert child.data.params["optim.epochs"] == "2" and "data.corruption" in child.data.params
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1, 2]
        evaluations = [m.step for m in client.get_metric_history(child.info.run_id, "knn_acc")]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "inter_distance")] == evaluations != []
        assert not [k for k in child.data.metrics if "/" in k]  # per-class values: one artifact, not 30 charts
        assert child.data.tags["git_sha"] and child.data.tags["version.torch"]
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {
            "final_metrics.json",
            "classwise_uniformity.json",
            "feature_distance.json",
            "corrupted_samples.png",
            "per_class.json",
        } <= artifacts
        per_class = json.loads(
            Path(client.download_artifacts(child.info.run_id, "per_class.json", str(tmp_path))).read_text()
        )
        assert set(per_class) == {"classwise_uniformity", "intra_distance", "inter_distance"}
        assert len(per_class["intra_distance"]) == 10 and all(v >= 0 for v in per_class["intra_distance"].values())
    assert (
        "Relative accuracy drop vs ori" in out
        and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///" in out
    )
    # Readable names, the arm as the tables name it; Tune's JSON/CSV logs, no TensorBoard files or hint.
    names = {r.info.run_name for r in everything}
    assert {"untrained-ori-s0", "supervised-glo_4-s0", "moco_v2-loc_4-s0"} <= names
    folders = sorted(p for p in (storage / "smoke").iterdir() if p.is_dir())
    assert sorted(f.name.rsplit("-", 1)[0] for f in folders) == sorted(names - {"smoke"})
    for folder in folders:
        assert (folder / "result.json").stat().st_size > 0 and (folder / "progress.csv").exists()
        assert not list(folder.glob("events.out.tfevents*")), folder
    assert "tensorboard" not in out.lower()
    # The end of the sweep: decided claims only (plus the count of all), the parent run's summary
    # metrics, the HTML report logged to the parent, the UI command with one worker and the URL.
    claims = out[out.index("Claim checks") : out.index("HTML report:")].splitlines()[1:]
    assert not [line for line in claims if line.startswith("INCONCLUSIVE")]
    assert "INCONCLUSIVE" in [line for line in claims if line.strip()][-1]  # the count line
    parent = client.get_run(parents[0].info.run_id)
    summary = {"drop/supervised/glo_4", "drop/moco_v2/loc_4", "claims_pass", "claims_fail", "claims_inconclusive"}
    assert summary | {"claims_one_seed"} <= set(parent.data.metrics)
    curve = client.get_metric_history(parent.info.run_id, "level_curve/supervised/global")
    assert [m.step for m in curve] == [4] and 0 <= curve[
        0
    ].value <= 100  # accuracy against the grid, for the UI's chart
    assert (
        parent.data.tags["mlflow.source.name"]
        and parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["git_sha"]
    )
    report = storage / "analysis" / "smoke" / "report.html"
    assert f"written: {report}" in out and report.stat().st_size > 10_000
    assert any(
        a.path.endswith("report.html")
        for folder in client.list_artifacts(parent.info.run_id)
        for a in ([folder] if not folder.is_dir else client.list_artifacts(parent.info.run_id, folder.path))
    )
    assert "--workers 1" in out and f"#/experiments/{parent.info.experiment_id}" in out
    # Each trained run carries its final backbone, loadable with weights_only into the model its params build.
    moco = next(c for c in children if c.data.params["method"] == "moco_v2")
    path = client.download_artifacts(moco.info.run_id, "backbone.pt", str(tmp_path))
    flat = {k: _param(v) for k, v in moco.data.params.items()}
    model = build_model(TrialConfig.from_flat(flat).resolved(), 10, torch.device("cpu"))
    model.backbone.load_state_dict(torch.load(path, weights_only=True))  # strict: every key, every shape
    (dataset,) = [d.dataset for d in client.get_run(moco.info.run_id).inputs.dataset_inputs]
    assert dataset.name == "shapes" and len(dataset.digest) == 16 and json.loads(dataset.profile)["classes"] == 10
    assert not [c for c in untrained if "backbone.pt" in {a.path for a in client.list_artifacts(c.info.run_id)}]


def _param(text: str):
    """A logged param back as its value (non-strings are logged as JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _max_concurrent(runs) -> int:
    """Most runs open at one instant (runs open at trial start and close at its end)."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def test_sweep__fractional_gpus_pack_four_trials_that_train_on_cpu(storage, ray_shutdown, capsys):
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False)  # one logical GPU
    code = main(
        GRID,
        argv(
            storage,
            "--experiment",
            "pack",
            "--methods",
            "supervised",
            "--seeds",
            "0",
            "1",
            "--gpus-per-trial",
            "0.25",
            "--cpus-per-trial",
            "0.5",
            "--config",
            TINY_YAML,
            epochs=2,
        ),
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "HTML report not written (--no-report); write it with: python -m analysis.report --experiment pack" in out
    assert not (storage / "analysis").exists()
    client, _, children = runs(storage, "pack")
    assert len(children) == 6
    assert _max_concurrent(children) == 4  # 4 x 0.25 GPU at once, never a 5th
    finals = [final_metrics(client, c, storage) for c in children]
    assert {f["device"] for f in finals} == {"cpu"}
    assert {f["precision"] for f in finals} == {resolve_precision("auto", torch.device("cpu"))}  # what auto ran in


def test_sweep__two_node_cluster_runs_trials_on_both_nodes(storage, ray_shutdown, capsys):
    """Trials spread over a head and a worker node; the sweep also takes ``--set optim.weight_decay=5e-4``.

    A fresh process per trial (``reuse_workers: false``): else the head's worker, done with its tiny
    trial before the worker node's process has imported torch, takes every trial."""
    from ray.cluster_utils import Cluster

    config = {**yaml.safe_load(open(TINY_YAML)), "reuse_workers": False}
    fresh = storage.parent / "fresh.yaml"
    fresh.write_text(yaml.safe_dump(config))
    wd = ["--set", "optim.weight_decay=5e-4"]

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, configure_logging=False)
        code = main(
            GRID,
            argv(
                storage,
                "--experiment",
                "two-nodes",
                "--set",
                "eval.eval_every=0",
                "--config",
                str(fresh),
                *wd,
                epochs=1,
            ),
        )
        assert code == 0, capsys.readouterr().out
        client, _, children = runs(storage, "two-nodes")
        nodes = {final_metrics(client, c, storage)["node_id"] for c in children}
        assert len(children) == 3 and len(nodes) == 2
        # "5e-4" (which YAML 1.1 reads as a string) reaches every trial as the number
        assert {float(c.data.params["optim.weight_decay"]) for c in children} == {5e-4}
    finally:
        ray.shutdown()
        cluster.shutdown()
