"""MLflow runs and Tune folders -> one tidy frame; histories; clear errors for bad stores."""

from __future__ import annotations

import json

import pytest

from analysis import collect
from analysis.frame import AnalysisError


def test_load_runs__one_row_per_child_with_decoded_params_and_final_metrics(fake_store):
    df = collect.load_runs("tiny", fake_store).sort_values("data.corruption")
    assert list(df["data.corruption"]) == ["glo_4", "ori"]  # the parent run is not a trial
    row = df.iloc[1]
    assert row["system.seed"] == 0 and row["optim.epochs"] == 2 and row["model.width"] == 0.125
    assert row["data.image_size"] is None and row["method"] == "supervised"
    assert row["knn_acc"] == 80.0 and row["uniformity"] == 0.7
    assert row["classwise_uniformity"] == [0.1, 0.2] and row["feature_distance"][0] == [0.1, 0.5]
    assert row["trial_id"] == "t_tiny_0" and row["status"] == "FINISHED"


def test_load_runs__unknown_experiment_lists_the_existing_ones(fake_store):
    with pytest.raises(AnalysisError, match=r"unknown experiment 'nope'; existing: dirty, tiny"):
        collect.load_runs("nope", fake_store)


def test_client_for__a_missing_sqlite_store_is_an_error_not_a_new_file(tmp_path):
    with pytest.raises(AnalysisError, match="no MLflow store"):
        collect.load_runs("x", f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def test_histories__per_epoch_values_with_step_as_epoch(fake_store):
    df = collect.load_runs("tiny", fake_store)
    h = collect.histories(df, ("uniformity",), fake_store)
    assert sorted(h[h["run_id"] == df["run_id"].iloc[0]]["epoch"]) == [1, 2]
    assert set(h["metric"]) == {"uniformity"}
    per_class = collect.histories(df, ("intra_distance/",), fake_store)
    assert sorted(zip(per_class["metric"], per_class["epoch"], strict=True))[:2] == [("intra_distance/0", 1), ("intra_distance/0", 1)]
    assert set(per_class["metric"]) == {"intra_distance/0", "intra_distance/1"}


def test_sweep_info__parent_run_tags_and_wall_time(fake_store):
    info = collect.sweep_info("tiny", fake_store)
    assert info["tags"]["sweep_name"] == "grid_patch_sizes" and info["wall_s"] >= 0 and info["parent_run_id"]


def tune_folder(root):
    """<root>/exp/<trial_dir>/result.json (two reports) and a checkpoint, like Tune writes."""
    trial = root / "exp" / "train_ab_00000_0_sweep_cell=x"
    (trial / "checkpoint_000001").mkdir(parents=True)
    (trial / "checkpoint_000001" / "state.pt").write_bytes(b"")
    cell = {"method": "moco_v2", "data.corruption": "glo_4", "system.seed": 1, "optim.epochs": 2}
    lines = [{"epoch": 1, "loss": 3.0, "trial_id": "ab_00000", "done": False, "config": {"sweep.cell": cell}},
             {"epoch": 2, "loss": 2.0, "knn_acc": 55.0, "uniformity": 1.5, "classwise_uniformity": [1.0, 2.0],
              "trial_id": "ab_00000", "done": True, "config": {"sweep.cell": cell, "sweep.gpu": 0}}]
    (trial / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root / "exp"


def test_load_tune__flat_config_from_the_cell_final_metrics_and_checkpoint(tmp_path):
    df = collect.load_tune(tune_folder(tmp_path))
    row = df.iloc[0]
    assert (row["method"], row["data.corruption"], row["system.seed"], row["knn_acc"]) == ("moco_v2", "glo_4", 1, 55.0)
    assert row["checkpoint"].endswith("checkpoint_000001/state.pt") and "sweep.gpu" not in df
    h = collect.histories(df, ("loss",))
    assert h["value"].tolist() == [3.0, 2.0]


def test_histories__a_key_ending_in_slash_is_a_prefix(tmp_path):
    folder = tune_folder(tmp_path)
    result = folder / "train_ab_00000_0_sweep_cell=x" / "result.json"
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    lines[1].update({"intra_distance/0": 0.4, "intra_distance/1": 0.6, "intra_distance": 0.5})
    result.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    h = collect.histories(collect.load_tune(folder), ("intra_distance/",))
    assert sorted(zip(h["metric"], h["value"], strict=True)) == [("intra_distance/0", 0.4), ("intra_distance/1", 0.6)]


def test_load_tune__a_missing_folder_lists_its_siblings(tmp_path):
    tune_folder(tmp_path)
    with pytest.raises(AnalysisError, match="existing: exp"):
        collect.load_tune(tmp_path / "nope")
