"""loop_overhead.py: the timed config, the round summary, and the step and loop arms on real data."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks.loop_overhead import line, loop_rate, main, step_rate, summarize, thread_rate, timed_config
from trainables.build import load_data
from trainables.config import TrialConfig


def test_timed_config__keeps_the_model_and_method_two_epochs_no_evaluation_between():
    flat = {"method": "moco_v2", "method.queue_size": 1024, "optim.epochs": 28, "eval.eval_every": 6,
            "eval.knn_at_init": True, "eval.probe": True, "model.width": 0.25}
    cut = timed_config(flat)
    assert cut["optim.epochs"] == 2 and cut["eval.eval_every"] == 0
    assert cut["eval.knn_at_init"] is False and cut["eval.probe"] is False
    assert cut["method.queue_size"] == 1024 and cut["model.width"] == 0.25
    assert flat["optim.epochs"] == 28  # the trial's own config is not touched


def test_summarize__medians_per_arm_and_of_the_per_round_ratios():
    rounds = [{"step": 100.0, "loop": 90.0, "thread": 70.0, "tune": 80.0},
              {"step": 200.0, "loop": 200.0, "thread": 160.0, "tune": 190.0},
              {"step": 150.0, "loop": 120.0, "thread": 150.0, "tune": 150.0}]
    s = summarize(rounds)
    assert (s["step"], s["loop"], s["thread"], s["tune"]) == (150.0, 120.0, 150.0, 150.0)
    # per-round ratios 0.9, 1.0, 0.8 and 0.8, 0.95, 1.0: the median of ratios, not the ratio of medians
    assert s["loop/step"] == pytest.approx(0.9) and s["tune/step"] == pytest.approx(0.95)
    assert s["thread/step"] == pytest.approx(0.8)  # 0.7, 0.8, 1.0
    assert "tune" not in summarize([{"step": 1.0, "loop": 1.0}])


def test_line__rates_then_ratios_with_nan_for_arms_not_run():
    text = line("moco_v2", "1", {"step": 200.0, "loop": 180.0, "thread": 150.0}, {"loop/step": 0.9, "thread/step": 0.75})
    assert text.split() == ["moco_v2", "1", "200.0", "180.0", "150.0", "nan", "0.90", "0.75", "nan"]


def test_step_and_loop_arms__time_the_same_model_on_real_data():
    flat = timed_config(TrialConfig(method="supervised").replace(
        {"data.dataset": "digits", "data.train_per_class": 20, "model.width": 0.125, "optim.batch_size": 32}).resolved().to_flat())
    data = load_data(TrialConfig.from_flat(flat).data)
    steps = len(data.train) // 32
    assert steps >= 2
    assert step_rate(flat, steps) > 0
    assert loop_rate(flat, data) > 0
    assert thread_rate(flat) > 0


def test_main__methods_with_no_trained_trial_name_the_valid_ones(tmp_path, monkeypatch):
    trial = tmp_path / "exp" / "train_00000"
    trial.mkdir(parents=True)
    cell = {"method": "supervised", "data.corruption": "ori", "system.seed": 0, "optim.epochs": 2}
    (trial / "result.json").write_text(json.dumps({"epoch": 2, "trial_id": "t0", "done": True, "config": {"sweep.cell": cell}}) + "\n")
    monkeypatch.setattr(sys, "argv", ["loop_overhead.py", "--experiment", "exp", "--storage-path", str(tmp_path), "--methods", "byol"])
    with pytest.raises(SystemExit, match=r"--methods byol: no trained trials of these in exp; valid: supervised"):
        main()
