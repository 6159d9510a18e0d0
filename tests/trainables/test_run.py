"""The single-trial CLI: JSON on stdout's last line, one-line errors with exit code 2, checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from trainables.run import main, parse_assignment


def _tiny_args(tmp_path) -> list[str]:
    return [
        "--dataset",
        "digits",
        "--width",
        "0.125",
        "--train-per-class",
        "20",
        "--test-per-class",
        "10",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--set",
        "eval.knn_k=20",
    ]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainables.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli__prints_final_metrics_json_on_the_last_stdout_line(tmp_path):
    proc = _run_cli("--method", "supervised", "--epochs", "1", *_tiny_args(tmp_path))
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 <= final["knn_acc"] <= 100 and len(final["feature_distance"]) == 10
    assert "epoch=1" in proc.stderr and "done=True" in proc.stderr  # per-epoch lines go to stderr


def test_cli__unknown_method_exits_2_with_a_one_line_error():
    proc = _run_cli("--method", "mocov3", "--epochs", "1")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'mocov3'" in lines[0] and "moco_v2" in lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "supervised", "--corruption", "swirl_2"], "unknown corruption 'swirl_2'"),
        (["--set", "optim.lrr=0.1"], "unknown config key(s) optim.lrr"),
        (["--set", "optim.lr"], "not key=value"),
        (["--precision", "fp16"], "system.precision 'fp16' is invalid"),
    ],
)
def test_main__bad_input_returns_2_with_a_one_line_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_main__print_config_shows_the_resolved_flat_config(capsys):
    assert (
        main(
            [
                "--method",
                "byol",
                "--set",
                "optim.lr=0.1",
                "--set",
                "method.proj_dim=64",
                "--print-config",
            ]
        )
        == 0
    )
    flat = json.loads(capsys.readouterr().out)
    assert (
        flat["optim.lr"] == 0.1
        and flat["optim.optimizer"] == "lars"
        and flat["method.proj_dim"] == 64
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a=1", ("a", 1)),
        ("b=0.5", ("b", 0.5)),
        ("c=true", ("c", True)),
        ("d=null", ("d", None)),
        ("e=glo_4", ("e", "glo_4")),
    ],
)
def test_parse_assignment__reads_values_as_yaml(text, expected):
    assert parse_assignment(text) == expected


def test_main__checkpoint_is_written_and_a_rerun_resumes_from_it(tmp_path, capsys):
    ckpt = tmp_path / "run.pt"
    argv = [
        "--method",
        "supervised",
        "--epochs",
        "2",
        "--checkpoint",
        str(ckpt),
        *_tiny_args(tmp_path),
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ckpt.exists() and not ckpt.with_suffix(".tmp").exists()
    assert main(argv) == 0  # finished checkpoint: no training, the same model evaluated again
    out = capsys.readouterr()
    assert f"resuming from {ckpt} at epoch 2" in out.err
    again = json.loads(out.out.strip().splitlines()[-1])
    assert (
        again["knn_acc"] == first["knn_acc"]
        and again["feature_distance"] == first["feature_distance"]
    )
