"""Every analysis command: one-line errors with exit status 2, outputs in --out."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import claims, correlate, drops, report


@pytest.mark.parametrize("command", [drops, correlate, claims, report])
def test_command__unknown_experiment_is_a_one_line_error(command, fake_store, tmp_path, capsys):
    code = command.main(["--experiment", "nope", "--mlflow-uri", fake_store, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: unknown experiment 'nope'; existing: dirty, tiny\n"


@pytest.mark.parametrize("command", [drops, claims, report])
def test_command__no_clean_trial_is_a_one_line_error(command, fake_store, tmp_path, capsys):
    code = command.main(["--experiment", "dirty", "--mlflow-uri", fake_store, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: experiment 'dirty' has no clean (ori) trial") and err.count("\n") == 1


def test_drops__writes_markdown_csv_and_chart(fake_store, tmp_path, capsys):
    out = tmp_path / "o"
    assert drops.main(["--experiment", "tiny", "--mlflow-uri", fake_store, "--out", str(out)]) == 0
    text = (out / "drops.md").read_text()
    assert "| supervised | 25.0 ±" in text  # 80 -> 60
    assert text.index("## Relative drop vs ori") < text.index("## Floor-corrected drop") and drops.NO_FLOOR in text
    assert {"drops.md", "drops.csv", "floor_drops.csv", "trial_drops.csv", "accuracy.csv", "drops.png"} <= {
        p.name for p in out.iterdir()
    }
    assert {"drop", "floor_drop"} <= set(pd.read_csv(out / "trial_drops.csv").columns)
    assert "Relative drop vs ori" in capsys.readouterr().out


def test_claims__writes_the_checks_with_the_quoted_study_text(fake_store, tmp_path):
    out = tmp_path / "o"
    assert claims.main(["--experiment", "tiny", "--mlflow-uri", fake_store, "--out", str(out)]) == 0
    table = pd.read_csv(out / "claims.csv")
    assert table["quote"].notna().all() and {"C1.avg", "C1.avg.floor", "C5.train", "C7.seeds"} <= set(table["id"])
    train = table[
        (table["id"] == "C5.train")
        & table["claim"].str.startswith("overall uniformity rises during training (supervised")
    ]
    assert train["effect"].tolist() == pytest.approx(
        [0.7 - 0.5]
    )  # epoch 1 -> 2 of the logged history (one seed: no interval)


def _garbage(path):
    path.write_bytes(bytes(range(256)) * 4)


def _empty(path):
    path.write_bytes(b"")


def _other_sqlite(path):
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trials (x)")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_garbage, "is not an SQLite database"),
        (_empty, "is an empty file, not a database"),
        (_other_sqlite, "is an SQLite database without MLflow's tables (experiments, runs)"),
    ],
)
def test_command__a_store_that_is_no_mlflow_database_is_refused_untouched(make, message, tmp_path, capsys):
    store = tmp_path / "mlflow.db"
    make(store)
    before = (store.read_bytes(), store.stat().st_mtime_ns)
    code = drops.main(["--experiment", "x", "--mlflow-uri", f"sqlite:///{store}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: MLflow store {str(store)!r} ")
    assert message in err and err.count("\n") == 1
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "mlflow.db"
    ]


def test_parser__program_name_is_the_command_a_user_types():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "analysis.drops", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("usage: python -m analysis.drops ")
    assert "``" not in out  # plain text, not the docstring's RST
