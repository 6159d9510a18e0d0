"""Every analysis command: one-line errors with exit status 2, outputs in --out."""

from __future__ import annotations

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
    assert "| supervised | 25.0 ±" in (out / "drops.md").read_text()  # 80 -> 60
    assert {"drops.md", "drops.csv", "accuracy.csv", "drops.png"} <= {p.name for p in out.iterdir()}
    assert "Relative drop vs ori" in capsys.readouterr().out
