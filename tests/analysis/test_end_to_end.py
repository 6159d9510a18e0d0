"""A tiny real sweep (Ray Tune + MLflow, with the untrained reference) to the HTML report."""

from __future__ import annotations

import re

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from analysis import collect, curves, report
from sweeps.grid_patch_sizes import SWEEP
from sweeps.launch import main
from sweeps.options import CONFIG_DIR


@pytest.fixture
def ray_shutdown():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.slow
def test_report__from_a_real_smoke_sweep(tmp_path, monkeypatch, ray_shutdown, capsys):
    monkeypatch.setenv("SBL_CACHE_DIR", str(tmp_path / "cache"))
    config = yaml.safe_load((CONFIG_DIR / "grid_patch_sizes.yaml").read_text())
    config.update(include_untrained=True, families=["glo"])  # ori and glo_4: enough for every section
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    storage = tmp_path / "runs"
    argv = [
        "--smoke-test",
        "--config",
        str(tmp_path / "sweep.yaml"),
        "--storage-path",
        str(storage),
        "--experiment",
        "e2e",
        "--seeds",
        "0",
    ]
    assert main(SWEEP, argv) == 0, capsys.readouterr().out
    ray.shutdown()

    df = collect.load_runs("e2e", collect.default_uri(storage))
    assert len(df) == 6  # 2 methods x {ori, glo_4} + 2 untrained (epochs 0)
    assert (df["optim.epochs"] == 0).sum() == 2 and df["knn_acc"].notna().all()
    assert df.loc[df["optim.epochs"] > 0, "checkpoint"].notna().all()

    assert report.main(["--experiment", "e2e", "--storage-path", str(storage)]) == 0
    page = (storage / "analysis" / "e2e" / "report.html").read_text()
    for text in (
        "Claim checks",
        "C1.avg",
        "relative drop vs ori",
        ">untrained<",
        "Grad-CAM: moco_v2 trained",
        "t-SNE of test features",
        "Training dynamics",
        "version.torch",
    ):
        assert text in page, text
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 6  # bars, scatter, dynamics, 2 CAMs, t-SNE
    client = MlflowClient(collect.default_uri(storage))
    parent = collect.sweep_info("e2e", collect.default_uri(storage))["parent_run_id"]
    assert [a.path for a in client.list_artifacts(parent, "analysis")] == ["analysis/report.html"]

    assert curves.main(["--experiment", "e2e", "--storage-path", str(storage), "--out", str(tmp_path / "curves")]) == 0
    frame = curves.curves_frame(storage / "e2e")  # what Tune wrote: the untrained references train no epoch
    assert (
        len(frame) == 4
        and set(frame["run"]) == {0}
        and frame["timestamp"].notna().all()
        and (frame["samples"] > 0).all()
    )
