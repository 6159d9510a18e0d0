"""trainables/schema.py: the record layout every layer shares, importable without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trainables import schema

ROOT = Path(__file__).resolve().parents[2]


def test_analysis_collect__imports_without_ray():
    code = "import sys, analysis.collect, trainables.schema; print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_trial_config__searched_top_level_keys_override_the_cell_and_sweep_keys_are_dropped():
    config = {"sweep.cell": {"method": "moco_v2", "optim.lr": 0.1}, "optim.lr": 0.3, "sweep.gpu": 0.25}
    assert schema.trial_config(config) == {"method": "moco_v2", "optim.lr": 0.3}


def test_checkpoint_files__readable_and_tune_named_folders(tmp_path):
    for folder in ("moco_v2-glo_4-s0-ab_00001", "train_ab_00001_1_sweep_cell=x", "moco_v2-ori-s0-ab_00002"):
        (tmp_path / folder / "checkpoint_000001").mkdir(parents=True)
        (tmp_path / folder / "checkpoint_000001" / schema.STATE_FILE).write_bytes(b"")
    found = sorted(p.parent.parent.name for p in schema.checkpoint_files(tmp_path, "ab_00001"))
    assert found == ["moco_v2-glo_4-s0-ab_00001", "train_ab_00001_1_sweep_cell=x"]


def test_trial_checkpoints__in_training_order_whatever_the_numbers_or_write_times(tmp_path):
    """A trial resumed from an older Tune snapshot numbers its checkpoints from it: its final
    checkpoint_000004 (epoch 8) sorts after the killed launch's checkpoint_000005 (epoch 5), though
    its write time was lost in a copy. Checkpoints from before the epoch file keep name order,
    before those that have one (analysis, downstream stage 2 and Grad-CAM take the last)."""
    import os

    for name, epoch, written in (
        ("checkpoint_000005", 5, 300.0),
        ("checkpoint_000004", 8, 100.0),
        ("checkpoint_000001", None, 200.0),
        ("checkpoint_000000", None, 400.0),
    ):
        folder = tmp_path / name
        folder.mkdir()
        if epoch is None:
            (folder / schema.STATE_FILE).write_bytes(b"")
        else:
            schema.save_state({"epoch": epoch}, folder)
        os.utime(folder / schema.STATE_FILE, (written, written))
    assert [p.parent.name for p in schema.trial_checkpoints(tmp_path)] == [
        "checkpoint_000000",
        "checkpoint_000001",
        "checkpoint_000005",
        "checkpoint_000004",
    ]


def test_default_uri__absolute_sqlite_beside_the_tune_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert schema.default_uri() == f"sqlite:///{tmp_path.resolve() / 'runs' / 'mlflow.db'}"
