"""trainables/metrics.py: every key a real trial reports is declared, and the MLflow writer logs
exactly the declared metrics (a new metric is one function plus one declaration)."""

from __future__ import annotations

import math

import pytest

from trainables import metrics
from trainables.loop import run_trial


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Every report of two real trials (supervised, moco_v2) with every evaluation switched on (fine-tuning too)."""
    from tests.trainables.conftest import tiny_flat

    out = {}
    for method in ("supervised", "moco_v2"):
        flat = tiny_flat(
            method,
            tmp_path_factory.mktemp("cache"),
            **{"eval.eval_every": 1, "eval.knn_at_init": True, "eval.finetune": True, "eval.finetune_epochs": 1},
        )
        out[method] = []
        run_trial(flat, out[method].append)
    return out


@pytest.mark.parametrize("method", ["supervised", "moco_v2"])
def test_reports__every_key_is_declared(reports, method):
    for report in reports[method]:
        assert metrics.undeclared(report) == [], f"declare these in trainables/metrics.py: {metrics.undeclared(report)}"


@pytest.mark.parametrize("method", ["supervised", "moco_v2"])
def test_reports__epoch_keys_every_epoch_eval_keys_at_evaluations_final_keys_once(reports, method):
    every = set(metrics.names(when=metrics.EPOCH, every_method=True))
    evaluated = set(metrics.names(when=metrics.EVAL, every_method=True)) | {
        "knn_acc_init",
        "knn_gain",
    }  # knn_at_init is on
    # eval.probe defaults on; eval.finetune is on here
    final = set(metrics.names(when=metrics.FINAL, every_method=True)) | {
        "probe_acc",
        "ece",
        "finetune_acc",
        "finetune_loss",
    }
    first, last = reports[method]
    assert every | evaluated <= set(first) and not (final & set(first))
    assert every | evaluated | final <= set(last) and last["done"] is True


def test_reports__step_scalars_of_a_method_reach_the_report(reports):
    """train_acc (supervised) and momentum (MoCo) come out of training_step as epoch means."""
    assert all(0 <= r["train_acc"] <= 100 for r in reports["supervised"])
    assert all(0.9 <= r["momentum"] <= 1 and math.isfinite(r["momentum"]) for r in reports["moco_v2"])
    assert "momentum" not in reports["supervised"][0] and "train_acc" not in reports["moco_v2"][0]


def test_mlflow_writer__logs_exactly_the_declared_metrics(reports, tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import MLflowTrialWriter, open_parent_run
    from tests.sweeps.test_tracking import _Trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = open_parent_run(uri, "exp", tmp_path / "art", tmp_path / "parent_id", {})
    writer, client = MLflowTrialWriter(uri, parent), MlflowClient(uri)
    for method, trial_reports in reports.items():
        trial = _Trial(f"{method}_00000", trial_reports[-1])
        trial.checkpoint = None
        for report in trial_reports:
            writer.on_trial_result(0, [], trial, report)
        writer.on_trial_complete(0, [], trial)
        run = client.get_run(writer.run_for(trial)[0])
        reported = {k for r in trial_reports for k in r}
        assert set(run.data.metrics) == reported & set(metrics.names("metric"))
        assert {run.data.tags[k] for k in metrics.names("tag")} == {
            str(trial_reports[0][k]) for k in metrics.names("tag")
        }
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {f"{k}.json" for k in metrics.names("artifact")} | {metrics.PER_CLASS_ARTIFACT} <= artifacts


def test_names__analysis_and_the_sweeps_spell_no_metric_name_of_their_own():
    """The accuracy and geometry names come from trainables.metrics, never as string literals."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    named = {
        metrics.KNN_ACC,
        metrics.KNN_ACC_STUDY,
        metrics.PROBE_ACC,
        metrics.UNIFORMITY,
        metrics.ECE,
        metrics.CLASSWISE_UNIFORMITY,
        metrics.FEATURE_DISTANCE,
        metrics.INTRA_DISTANCE,
        metrics.INTER_DISTANCE,
    }
    found = []
    for path in [*sorted((root / "analysis").glob("*.py")), *sorted((root / "sweeps").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in named:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value!r}")
    assert found == [], "use the names in trainables.metrics:\n" + "\n".join(found)
