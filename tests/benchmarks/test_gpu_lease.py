"""gpu_lease.sh's --trial and --compare calls on a CPU, and lease_trial.py's budget stop and seed-noise check.

The lease's calls run where no one can debug them (15 minutes of device time, files back only from
$OUT): each call the next lease makes is rehearsed here with ``--dry-run``, as the lease makes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.lease_trial import budget_stops, seed_noise
from benchmarks.streaming import first_batches
from benchmarks.streaming import main as streaming_main
from tests.conftest import REPO
from tests.trainables.data.test_stream import _folder

SCRIPT = REPO / "benchmarks" / "gpu_lease.sh"


def lease(out: Path, *args: str, **env: str) -> str:
    """One ``gpu_lease.sh`` call into ``out``; returns its lease.log. One OpenMP thread: on a shared
    2-core machine two threads per process spin at each other's barriers (a 0.7 s epoch took 9 s)."""
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, text=True, capture_output=True, check=False, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (out / "lease.log").read_text()


def last_json(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


@pytest.mark.slow
def test_gpu_lease__trial_twice_resumes_then_times_streaming_and_data_parallel(tmp_path, cifar10_jpeg):
    """The next lease's two calls (docs/results/gpu.md, "Next lease"), with the state in one folder;
    the dry run trains at most one epoch a call, so the first call stops as a spent budget does.
    Either order of the arguments. Streaming reads ../shared/data/cifar10-jpeg (cifar10_jpeg)."""
    state = {"LEASE_STATE": str(tmp_path / "state")}
    first = lease(tmp_path / "first", "--trial", "--dry-run", **state)
    trial = json.loads((tmp_path / "first" / "trial.json").read_text())
    assert [e["epoch"] for e in trial["epochs"]] == [1] and not trial["done"]
    assert (tmp_path / "state" / "trial.pt").exists() and "wait for the finished trial" in first
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == [
        "env.txt",
        "lease.log",
        "trial.json",
        "trial_curves.csv",
    ]

    second = lease(tmp_path / "second", "--dry-run", "--trial", **state)
    assert f"resuming from {tmp_path / 'state' / 'trial.pt'} after epoch 1" in second
    trial = json.loads((tmp_path / "second" / "trial.json").read_text())
    assert [e["epoch"] for e in trial["epochs"]] == [2] and trial["done"]  # no epoch trained twice
    assert trial["trial"]["method.queue_init"] == "random"  # the gpu preset's trial
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == [
        "data_parallel.log",
        "env.txt",
        "lease.log",
        "streaming.log",
        "trial.json",
        "trial_curves.csv",
    ]
    streaming = last_json(tmp_path / "second" / "streaming.log")
    assert streaming["ratio"] > 0 and not streaming["mismatch"]
    assert last_json(tmp_path / "second" / "data_parallel.log")["ratio"] > 0
    assert second.index("5. streaming") < second.index("6. data-parallel")  # no NCCL risk first


@pytest.mark.slow
def test_gpu_lease__compare_trains_both_modes_at_two_seeds_then_supervised_and_packing(tmp_path):
    """A later lease's seed-noise call: on a CPU the levers mode stands in for compiled+graph."""
    log = lease(tmp_path, "--compare", "--dry-run")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compare.jsonl",
        "env.txt",
        "lease.log",
        "packing.log",
        "supervised.log",
    ]
    rows = [json.loads(line) for line in (tmp_path / "compare.jsonl").read_text().splitlines()]
    moco = [r for r in rows if r["method"] == "moco_v2"]
    assert sorted((r["mode"], r["seed"]) for r in moco) == [("eager", 0), ("eager", 1), ("levers", 0), ("levers", 1)]
    assert all(r["done"] and r["epochs"] == 2 and r["knn_acc_study"] is not None for r in moco)
    (supervised,) = [r for r in rows if r["method"] == "supervised"]
    assert supervised["done"] and supervised["median_samples_per_s"] > 0
    noise = seed_noise(moco)
    assert set(noise["spread"]) == {"eager", "levers"} and set(noise["diff"]["levers"]) == {0, 1}
    verdict = "within seed noise" if noise["within_seed_noise"] else "NOT within seed noise"
    assert f"|eager - levers| s0 {noise['diff']['levers'][0]:.2f} s1 {noise['diff']['levers'][1]:.2f}: {verdict}" in log
    assert [r["k"] for r in last_json(tmp_path / "packing.log")["rows"]] == [1]


# The 2026-11-28 lease's moco_v2 trial, as lease_trial.py's report rows: epoch 1 also loaded the data
# and compiled (17.4 s), epoch 10 evaluated for the first time (9.3 s), every other epoch 2.74 s.
PRESET = {"optim.epochs": 200, "system.checkpoint_every": 5, "eval.eval_every": 10}


def _epochs(first: int, last: int, launch_first_s: float = 17.4) -> list[dict]:
    walls = {first: launch_first_s, 10: 9.26}
    return [
        {"epoch": e, "wall_s": walls.get(e, 2.74), "epoch_time_s": 12.1 if e == first else 2.74,
         "knn_acc": 50.0 if e % 10 == 0 else None}
        for e in range(first, last + 1)
    ]  # fmt: skip


def test_budget_stops__the_launchs_first_epoch_is_not_priced_as_the_next_one():
    epochs = _epochs(1, 12)
    # 12 s left: epoch 13 (2.74 s) fits; pricing it as epoch 1 (1.2 x 17.4 s) stopped the last lease 20 s early
    assert not budget_stops(epochs, PRESET, elapsed_s=388.0, budget_s=400.0, saved=False)
    assert budget_stops(epochs, PRESET, elapsed_s=397.0, budget_s=400.0, saved=False)
    # the launch's first epoch alone: priced at its training time (compile included), not its loading
    assert not budget_stops(_epochs(1, 1), PRESET, elapsed_s=20.0, budget_s=35.0, saved=False)
    assert budget_stops(_epochs(1, 1), PRESET, elapsed_s=20.0, budget_s=34.0, saved=False)


def test_budget_stops__with_a_state_file_it_stops_after_a_save_when_the_next_five_epochs_do_not_fit():
    epochs = _epochs(1, 25)  # epoch 25 saved the state; 26-30 ahead, 30 evaluates (0.3 s more than an epoch)
    ahead_s = 1.2 * (5 * 2.74 + 0.3)
    assert budget_stops(epochs, PRESET, elapsed_s=400.0 - ahead_s + 0.5, budget_s=400.0, saved=True)
    assert not budget_stops(epochs, PRESET, elapsed_s=400.0 - ahead_s - 0.5, budget_s=400.0, saved=True)
    assert not budget_stops(epochs, PRESET, elapsed_s=400.0 - ahead_s + 0.5, budget_s=400.0, saved=False)
    # between saves only the next epoch counts (the epochs since the save are trained either way)
    assert not budget_stops(_epochs(1, 26), PRESET, elapsed_s=400.0 - ahead_s + 0.5, budget_s=400.0, saved=True)
    # the last chunk holds the final evaluation, unseen in a resumed launch: priced at 3 epochs
    resumed = _epochs(191, 195, launch_first_s=40.0)  # resumed after epoch 190: no evaluation yet
    assert budget_stops(resumed, PRESET, elapsed_s=100.0 - 1.2 * 8 * 2.74 + 0.5, budget_s=100.0, saved=True)
    assert not budget_stops(resumed, PRESET, elapsed_s=100.0 - 1.2 * 8 * 2.74 - 0.5, budget_s=100.0, saved=True)


def test_seed_noise__mode_differences_against_the_spread_between_seeds():
    def row(mode, seed, knn, done=True):
        return {"mode": mode, "seed": seed, "knn_acc_study": knn, "done": done}

    rows = [
        row("eager", 0, 70.0),
        row("eager", 1, 70.6),
        row("compiled+graph", 0, 70.3),
        row("compiled+graph", 1, 70.5),
    ]
    noise = seed_noise([*rows, row("compiled+graph", 2, 10.0, done=False)])  # an unfinished trial: left out
    assert noise["spread"] == pytest.approx({"eager": 0.6, "compiled+graph": 0.2})
    assert noise["diff"]["compiled+graph"] == pytest.approx({0: 0.3, 1: 0.1})
    assert noise["within_seed_noise"] is True
    rows[2:] = [row("compiled+graph", 0, 69.2), row("compiled+graph", 1, 69.4)]  # 0.8, 1.2: more than a spread
    assert seed_noise(rows)["within_seed_noise"] is False
    cut = seed_noise(rows[:3])  # a call cut before the last trial: one pair and eager's spread decide
    assert cut["largest_spread"] == pytest.approx(0.6) and cut["within_seed_noise"] is False
    assert seed_noise([rows[0], rows[2]])["within_seed_noise"] is None  # a pair but no spread yet


def test_streaming_first_batches__a_gpu_lease_records_a_mismatch_that_a_cpu_run_raises():
    mine = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    assert first_batches("c", mine, mine + 1, exact=False, strict=True) == {
        "first_batch_mean_abs_diff": 1.0,
        "mismatch": False,
    }  # decoder rounding
    assert first_batches("c", mine, mine + 3, exact=False, strict=False)["mismatch"] is True  # CUDA: recorded
    with pytest.raises(AssertionError, match=r"differ by 3\.00"):
        first_batches("c", mine, mine + 3, exact=False, strict=True)
    with pytest.raises(AssertionError, match=r"differ by 1\.00"):
        first_batches("c", mine, mine + 1, exact=True, strict=True)  # both PIL: equal or wrong


def test_streaming__bytes_decode_on_a_cpu_runs_the_path_cuda_takes(tmp_path, capsys):
    root = _folder(tmp_path / "folder")
    args = "--image-size 16 --large 0 --workers 1 --batch-size 4 --repeats 1 --bytes-decode".split()
    streaming_main(["--root", str(root), *args])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (case,) = result["cases"]
    assert result["bytes_decode"] and not result["mismatch"] and case["ours_per_s"] > 0
    assert 0 < case["first_batch_mean_abs_diff"] <= 2.0  # another decoder than PIL's: rounding, not 0
