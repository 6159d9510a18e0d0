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
    assert sorted(zip(per_class["metric"], per_class["epoch"], strict=True))[:2] == [
        ("intra_distance/0", 1),
        ("intra_distance/0", 1),
    ]
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
    lines = [
        {"epoch": 1, "loss": 3.0, "trial_id": "ab_00000", "done": False, "config": {"sweep.cell": cell}},
        {
            "epoch": 2,
            "loss": 2.0,
            "knn_acc": 55.0,
            "uniformity": 1.5,
            "classwise_uniformity": [1.0, 2.0],
            "trial_id": "ab_00000",
            "done": True,
            "config": {"sweep.cell": cell, "sweep.gpu": 0},
        },
    ]
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


def test_histories__per_class_values_of_an_mlflow_row_come_from_its_trial_folder(fake_store, tmp_path):
    """Per-class values are not MLflow metrics (a run keeps the final ones in per_class.json): the
    folder's result.json has their history; plain metrics still come from MLflow."""
    folder = tune_folder(tmp_path) / "train_ab_00000_0_sweep_cell=x"
    lines = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    lines[1].update({"intra_distance/0": 0.4, "intra_distance/1": 0.6})
    (folder / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    df = collect.load_runs("tiny", fake_store)
    df["trial_dir"] = [str(folder), None]
    h = collect.histories(df, ("uniformity", "intra_distance/"), fake_store)
    first = h[h["run_id"] == df["run_id"].iloc[0]]
    assert sorted(first[first["metric"] != "uniformity"]["value"]) == [0.4, 0.6]  # the folder's, not MLflow's 0.3/0.2
    assert sorted(first[first["metric"] == "uniformity"]["epoch"]) == [1, 2]  # from MLflow
    second = h[h["run_id"] == df["run_id"].iloc[1]]
    assert {"intra_distance/0", "intra_distance/1"} <= set(second["metric"])  # no folder: MLflow's (older runs)


def test_load_tune__a_missing_folder_lists_its_siblings(tmp_path):
    tune_folder(tmp_path)
    with pytest.raises(AnalysisError, match="existing: exp"):
        collect.load_tune(tmp_path / "nope")


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    """Experiment ``twice`` holding two sweeps of the same trials (two parent runs from two storage
    folders), as a re-run into the same store used to leave it: (uri, [parent run ids])."""
    from mlflow.tracking import MlflowClient

    from tests.analysis.conftest import _child

    tmp_path = tmp_path_factory.mktemp("twice")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("twice", artifact_location=(tmp_path / "art").as_uri())
    parents = []
    for i, storage in enumerate(("/data/a/twice", "/data/b/twice")):
        parent = client.create_run(exp, run_name="twice", tags={"sweep": "parent", "storage_path": storage}).info.run_id
        for j, corruption in enumerate(("ori", "glo_4")):
            _child(client, exp, parent, f"t{i}_{j}", corruption, acc=80.0 - 20 * j - i)
        client.set_terminated(parent)
        parents.append(parent)
    return uri, parents


def test_load_runs__two_sweeps_under_one_name_are_refused_listing_both(two_sweeps):
    uri, parents = two_sweeps
    with pytest.raises(AnalysisError) as err:
        collect.load_runs("twice", uri)
    message = str(err.value)
    assert "\n" not in message and "2 sweeps" in message and "--sweep" in message, message
    assert all(p in message for p in parents) and "/data/a/twice" in message and "/data/b/twice" in message, message


def test_load_runs__sweep_selects_one_of_two(two_sweeps):
    uri, parents = two_sweeps
    df = collect.load_runs("twice", uri, sweep=parents[1])
    assert sorted(df["trial_id"]) == ["t1_0", "t1_1"]  # one row per trial: nothing pooled
    assert collect.sweep_info("twice", uri, sweep=parents[1])["parent_run_id"] == parents[1]
    with pytest.raises(AnalysisError, match="not a sweep of experiment 'twice'"):
        collect.load_runs("twice", uri, sweep="nope")


def test_drops_cli__two_sweeps_under_one_name_exit_2_unless_one_is_chosen(two_sweeps, tmp_path, capsys):
    from analysis import drops

    uri, parents = two_sweeps
    assert drops.main(["--experiment", "twice", "--mlflow-uri", uri, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and parents[0] in err, err
    assert (
        drops.main(["--experiment", "twice", "--mlflow-uri", uri, "--sweep", parents[0], "--out", str(tmp_path / "o")])
        == 0
    )
    assert "| supervised | 25.0 ±" in (tmp_path / "o" / "drops.md").read_text()  # 80 -> 60, one seed, one sweep
