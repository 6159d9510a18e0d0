"""A tiny real sweep (Ray Tune + MLflow, with the untrained reference) to the HTML report."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from analysis import collect, curves, report


@pytest.mark.slow
def test_report__from_a_real_smoke_sweep(smoke_sweep, tmp_path):
    """The session's smoke sweep (``tests/conftest.py``: 2 methods x {ori, glo_4, loc_4}, 2 epochs, and the
    untrained reference of each corruption) through collect, the report and the curves."""
    assert smoke_sweep.code == 0, smoke_sweep.out[-3000:]
    storage, name = smoke_sweep.storage, smoke_sweep.experiment
    df = collect.load_runs(name, collect.default_uri(storage))
    assert len(df) == 9  # 2 methods x {ori, glo_4, loc_4} + 3 untrained (epochs 0)
    assert (df["optim.epochs"] == 0).sum() == 3 and df["knn_acc"].notna().all()
    assert df.loc[df["optim.epochs"] > 0, "checkpoint"].notna().all()

    assert report.main(["--experiment", name, "--storage-path", str(storage)]) == 0
    page = (storage / "analysis" / name / "report.html").read_text()
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
    parent = collect.sweep_info(name, collect.default_uri(storage))["parent_run_id"]
    assert [a.path for a in client.list_artifacts(parent, "analysis")] == ["analysis/report.html"]

    assert curves.main(["--experiment", name, "--storage-path", str(storage), "--out", str(tmp_path / "curves")]) == 0
    frame = curves.curves_frame(storage / name)  # what Tune wrote: the untrained references train no epoch
    assert (
        len(frame) == 6 * 2  # trained trials x epochs
        and set(frame["run"]) == {0}
        and frame["timestamp"].notna().all()
        and (frame["samples"] > 0).all()
    )
