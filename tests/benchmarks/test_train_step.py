"""train_step.py --study, packing.py and the lease script: their CPU paths (the GPU runs them for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.lease_trial import levers_from
from benchmarks.train_step import peak_tflops, study, study_config, study_parser
from sweeps.launch import prepare
from sweeps.paper_table1 import SWEEP
from tests.conftest import REPO


def test_study_config__is_the_gpu_presets_trial_with_the_benchmarks_scale(tmp_path):
    plan, _ = prepare(SWEEP, ["--budget", "gpu", "--dry-run", "--dataset", "digits", "--storage-path", str(tmp_path)])
    varied = {"model.width", "optim.batch_size", "system.device", "system.channels_last"}
    for method in ("moco_v2", "byol", "supervised"):
        cell = next(c for c in plan.cells if c["method"] == method and c["optim.epochs"] > 0)
        ours = study_config(method, "eager", torch.device("cpu"), width=0.0625, batch=8).to_flat()
        same = [k for k in cell if k.startswith(("method.", "optim.", "model.")) and k not in varied | {"optim.epochs"}]
        assert {k: ours[k] for k in same} == {k: cell[k] for k in same}, method
        assert (ours["model.width"], ours["optim.batch_size"]) == (0.0625, 8)
    fast = study_config("byol", "compiled", torch.device("cpu")).system
    assert (fast.compile, fast.foreach_ema, fast.optimizer_impl) == (True, True, "foreach")  # LARS: foreach
    assert study_config("moco_v2", "graph", torch.device("cpu")).system.optimizer_impl == "fused"


def test_peak_tflops__by_device_name():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert peak_tflops("NVIDIA A10") is None and peak_tflops(None) is None


def test_study__a_small_cpu_run_times_every_asked_row_and_ends_with_the_headline_json(capsys):
    args = study_parser().parse_args(
        [
            "--study",
            "--methods",
            "supervised",
            "moco_v2",
            "--modes",
            "eager",
            "levers",
            "graph",
            "--width",
            "0.0625",
            "--batch",
            "8",
            "--image-size",
            "16",
            "--steps",
            "1",
        ]
    )
    study(args)
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    rows = {(r["method"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(m, mode) for m in ("supervised", "moco_v2") for mode in ("eager", "levers", "graph")}
    assert rows["moco_v2", "graph"]["skipped"] == "needs CUDA"
    for method in ("supervised", "moco_v2"):
        assert rows[method, "levers"]["samples_per_s"] > 0 and rows[method, "eager"]["gflop_per_sample"] > 0
    # MoCo: two trained passes and two key passes per pair; supervised: one trained pass per image
    assert rows["moco_v2", "eager"]["gflop_per_sample"] > 2.5 * rows["supervised", "eager"]["gflop_per_sample"]
    assert result["moco_v2_pairs_per_s"] == max(rows["moco_v2", m]["samples_per_s"] for m in ("eager", "levers"))
    assert result["supervised_images_per_s"] > 0 and result["ratio"] >= 1


def test_levers_from__picks_the_mode_that_trains_most_within_the_budget(tmp_path):
    rows = [
        {"method": "moco_v2", "mode": "eager", "samples_per_s": 6000, "setup_s": 5},
        {"method": "moco_v2", "mode": "compiled", "samples_per_s": 12000, "setup_s": 100},
        {"method": "moco_v2", "mode": "graph", "error": "RuntimeError: capture"},
        {"method": "supervised", "mode": "graph", "samples_per_s": 90000, "setup_s": 5},
    ]
    log = tmp_path / "train_step.log"
    log.write_text("table\n" + json.dumps({"rows": rows}) + "\n")
    levers, mode = levers_from(log, 300, "sgd")
    assert mode == "compiled" and levers["system.compile"] and levers["system.optimizer_impl"] == "fused"
    assert levers_from(log, 150, "sgd")[1] == "eager"  # 50 s after a 100 s compile train less than 145 s eager
    assert levers_from(tmp_path / "missing.log", 300, "sgd") == ({}, None)


@pytest.mark.slow
def test_gpu_lease__dry_run_runs_every_phase_and_writes_its_files(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_lease.sh"), "--dry-run"],
        env=env,
        text=True,
        capture_output=True,
        check=False,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "augment.log",
        "env.txt",
        "lease.log",
        "packing.log",
        "train_step.log",
        "trial.json",
        "trial_curves.csv",
    ]
    step = json.loads((tmp_path / "train_step.log").read_text().strip().splitlines()[-1])
    assert step["moco_v2_pairs_per_s"] > 0 and step["supervised_images_per_s"] > 0
    augment = json.loads((tmp_path / "augment.log").read_text().strip().splitlines()[-1])
    assert augment["augment"] and augment["moco_v2_pairs_per_s"] > 0
    packing = json.loads((tmp_path / "packing.log").read_text().strip().splitlines()[-1])
    assert [r["k"] for r in packing["rows"]] == [1, 2] and all(
        r["aggregate_samples_per_s"] > 0 for r in packing["rows"]
    )
    trial = json.loads((tmp_path / "trial.json").read_text())
    assert trial["done"] and trial["epochs_done"] == 2 and trial["mode"] in ("eager", "levers")
    assert (
        trial["trial"]["method.queue_init"] == "random" and trial["trial"]["model.stem_padding"] == 2
    )  # the gpu preset
    assert len((tmp_path / "trial_curves.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_lease_trial__state_file_resumes_the_trial_in_a_second_command(tmp_path):
    """A lease's second command continues the first's trial instead of starting over (issue 24)."""
    state = tmp_path / "state" / "trial.pt"
    state.parent.mkdir()
    sets = ["model.width=0.0625", "optim.batch_size=32", "data.train_per_class=20", "data.test_per_class=10"]
    sets += [
        "method.queue_size=64",
        "optim.epochs=2",
        "eval.eval_every=1",
        "eval.probe=false",
        "system.checkpoint_every=1",
    ]

    def command(out: Path) -> dict:
        args = [sys.executable, str(REPO / "benchmarks" / "lease_trial.py"), "--dataset", "digits", "--budget-s", "600"]
        args += ["--out", str(out), "--mode", "levers", "--state", str(state)] + [f"--set={s}" for s in sets]
        proc = subprocess.run(args, text=True, capture_output=True, check=False, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads((out / "trial.json").read_text())

    first = command(tmp_path / "first")
    assert state.exists() and first["done"] and [e["epoch"] for e in first["epochs"]] == [1, 2]
    second = command(tmp_path / "second")
    assert second["done"] and [e["epoch"] for e in second["epochs"]] == [2]  # no epoch trained again
    assert second["final"]["knn_acc"] == first["final"]["knn_acc"]  # the same network, evaluated again


def test_data_parallel_benchmark__times_the_plain_step_and_the_one_rank_ddp_step(tmp_path):
    """benchmarks/data_parallel.py (issue 27) runs on a CPU with a one-rank gloo group and prints its ratio."""
    args = [sys.executable, str(REPO / "benchmarks" / "data_parallel.py"), "--width", "0.0625", "--batch", "8"]
    proc = subprocess.run(
        [*args, "--steps", "2", "--rounds", "1"], text=True, capture_output=True, check=False, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["plain_samples_per_s"] > 0 and result["rank_samples_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["rank_samples_per_s"] / result["plain_samples_per_s"])
