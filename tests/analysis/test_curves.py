"""Per-epoch curves of finished and interrupted trials: resumes, throughput, aggregate rate, CLI."""

from __future__ import annotations

import json

import pytest

from analysis import curves
from analysis.frame import AnalysisError


def write_trial(root, name, cell, reports):
    """A Tune trial folder: ``reports`` are (epoch, iterations_since_restore, timestamp, samples/s, knn)."""
    trial = root / "exp" / name
    trial.mkdir(parents=True)
    lines = [
        {
            "epoch": e,
            "iterations_since_restore": i,
            "timestamp": t,
            "samples_per_s": s,
            "epoch_time_s": 100 / s,
            "knn_acc": k,
            "loss": 1.0,
            "trial_id": name,
            "config": {"sweep.cell": cell},
        }
        for e, i, t, s, k in reports
    ]
    (trial / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root / "exp"


def two_trials(tmp_path):
    """A supervised trial resumed once (epoch 2 re-run) and a moco_v2 trial, 100 samples per epoch."""
    sup = {"method": "supervised", "data.corruption": "ori", "system.seed": 0}
    moco = {"method": "moco_v2", "data.corruption": "glo_8", "system.seed": 0}
    write_trial(
        tmp_path,
        "a",
        sup,
        [
            (1, 1, 10, 50.0, 40.0),
            (2, 2, 12, 50.0, 45.0),  # run 0
            (2, 1, 30, 25.0, 46.0),
            (3, 2, 34, 25.0, 50.0),
        ],
    )  # run 1 re-runs epoch 2
    return write_trial(tmp_path, "b", moco, [(1, 1, 11, 20.0, 30.0), (2, 1, 33, 20.0, 31.0), (3, 2, 38, 20.0, 33.0)])


def test_trial_curve__a_resumed_epoch_keeps_its_last_report_and_runs_are_counted(tmp_path):
    folder = two_trials(tmp_path)
    df = curves.trial_curve(folder / "a")
    assert list(df["epoch"]) == [1, 2, 3] and list(df["run"]) == [0, 1, 1]
    assert list(df["knn_acc"]) == [40.0, 46.0, 50.0] and df["redone"].iloc[0] == 1
    assert df["trial"].iloc[0] == "supervised ori s0" and (df["samples"] == 100).all()


def test_trial_curve__a_replayed_report_only_fills_an_epoch_without_its_own(tmp_path):
    # Run 0 reported epochs 1-2 and trained 3, which its driver never took in; run 1 replays 1-3
    # (tune_adapter.replay) and trains 4. Only epoch 3's replay stands, without the resume's timestamp.
    cell = {"method": "supervised", "data.corruption": "ori", "system.seed": 0}
    folder = write_trial(tmp_path, "a", cell, [(1, 1, 10, 50.0, 40.0), (2, 2, 12, 50.0, 45.0)])
    run1 = [(1, 1, 30, 50.0, 40.0), (2, 2, 30, 50.0, 45.0), (3, 3, 30, 50.0, 47.0)]
    replays = write_trial(tmp_path / "r", "a", cell, run1) / "a" / "result.json"
    lines = [{**json.loads(line), "replayed": True} for line in replays.read_text().splitlines()]
    lines.append({**lines[-1], "epoch": 4, "iterations_since_restore": 4, "timestamp": 40, "knn_acc": 50.0})
    del lines[-1]["replayed"]
    with open(folder / "a" / "result.json", "a") as out:
        out.writelines(json.dumps(line) + "\n" for line in lines)
    df = curves.trial_curve(folder / "a")
    assert list(df["epoch"]) == [1, 2, 3, 4] and list(df["run"]) == [0, 0, 1, 1]
    assert df["timestamp"].isna().tolist() == [False, False, True, False] and df["redone"].iloc[0] == 0
    assert list(df["knn_acc"]) == [40.0, 45.0, 47.0, 50.0]


def test_throughput_table__epochs_runs_and_median_rate_per_trial(tmp_path):
    table = curves.throughput_table(curves.curves_frame(two_trials(tmp_path)))
    sup, moco = table.loc["supervised ori s0"], table.loc["moco_v2 glo_8 s0"]
    assert (sup["epochs"], sup["runs"], sup["redone"], sup["median_samples_per_s"]) == (3, 2, 1, 25.0)
    assert (moco["epochs"], moco["runs"], moco["median_samples_per_s"], moco["last_knn"]) == (3, 2, 20.0, 33.0)


def test_wall_rate__counts_only_epochs_inside_the_windows_where_every_trial_ran(tmp_path):
    rate, seconds = curves.wall_rate(curves.curves_frame(two_trials(tmp_path)))
    # run 0: a's epoch 2 was re-run, so a spans [10, 10] and b [11, 11]: no window; run 1: [30, 34] and [33, 38] -> (33, 34]
    assert seconds == 1 and rate == 100.0  # supervised epoch 3 (t=34) is the only report inside


def test_main__writes_csvs_and_figure_and_prints_the_aggregate(tmp_path, capsys):
    two_trials(tmp_path)
    out = tmp_path / "out"
    assert (
        curves.main(
            [
                "--experiment",
                "exp",
                "--storage-path",
                str(tmp_path),
                "--out",
                str(out),
                "--target",
                "moco_v2:glo_8=59.24",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "supervised ori s0" in printed and "aggregate: 45 samples/s" in printed  # 25 + 20
    assert {p.name for p in out.iterdir()} == {"curves.csv", "throughput.csv", "curves.png"}
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("target", ["moco_v2=82", "moco_v2:ori=high", ":ori=1"])
def test_main__a_bad_target_is_one_line_naming_the_valid_form(tmp_path, capsys, target):
    two_trials(tmp_path)
    assert curves.main(["--experiment", "exp", "--storage-path", str(tmp_path), "--target", target]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and repr(target) in err and "method:corruption=value" in err


def test_curves_frame__trials_sharing_method_corruption_and_seed_keep_apart(tmp_path):
    cell = {"method": "moco_v2", "data.corruption": "ori", "system.seed": 0}
    write_trial(tmp_path, "c1", {**cell, "method.queue_size": 1024}, [(1, 1, 10, 20.0, 30.0)])
    folder = write_trial(tmp_path, "c2", {**cell, "method.queue_size": 4096}, [(1, 1, 11, 10.0, 31.0)])
    table = curves.throughput_table(curves.curves_frame(folder))
    assert sorted(table.index) == ["moco_v2 ori s0 c1", "moco_v2 ori s0 c2"]
    assert table.loc["moco_v2 ori s0 c2", "median_samples_per_s"] == 10.0
    assert curves.wall_rate(curves.curves_frame(folder))[1] == 0  # one after the other: no shared window


def test_main__no_aggregate_when_the_trials_never_ran_together(tmp_path, capsys):
    cell = {"method": "supervised", "data.corruption": "ori"}
    write_trial(tmp_path, "t1", {**cell, "system.seed": 0}, [(1, 1, 10, 50.0, 40.0), (2, 2, 12, 50.0, 41.0)])
    write_trial(tmp_path, "t2", {**cell, "system.seed": 1}, [(1, 1, 20, 50.0, 40.0), (2, 2, 22, 50.0, 41.0)])
    assert curves.main(["--experiment", "exp", "--storage-path", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert "aggregate: none (the trials never all ran at once)" in capsys.readouterr().out


def test_curves_frame__missing_folder_and_no_reports_are_errors(tmp_path):
    with pytest.raises(AnalysisError, match="no Tune experiment folder"):
        curves.curves_frame(tmp_path / "nope")
    (tmp_path / "empty" / "t").mkdir(parents=True)
    with pytest.raises(AnalysisError, match="has reported an epoch yet"):
        curves.curves_frame(tmp_path / "empty")
