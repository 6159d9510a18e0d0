"""omp_threads.py: every arm runs a real step in its own interpreter; the summary; a bad method."""

from __future__ import annotations

import sys

import pytest

from benchmarks.omp_threads import ARMS, arm_rate, main, summarize


def test_arm_rate__every_arm_times_a_real_step_in_a_fresh_interpreter():
    spec = {"method": "supervised", "width": 0.125, "batch": 8, "precision": "fp32", "steps": 2, "set": {}}
    for arm in ARMS:
        assert arm_rate({**spec, "arm": arm}) > 0


def test_arm_rate__a_failing_arm_raises_with_its_error():
    spec = {"method": "supervised", "width": 0.125, "batch": 8, "precision": "int4", "steps": 1, "set": {}, "arm": "main"}
    with pytest.raises(RuntimeError, match=r"(?s)arm main failed:.*int4"):
        arm_rate(spec)


def test_summarize__medians_and_median_per_round_ratios_to_main():
    rounds = [{"main": 100.0, "thread": 90.0, "thread_after_main": 70.0},
              {"main": 200.0, "thread": 200.0, "thread_after_main": 150.0},
              {"main": 300.0, "thread": 240.0, "thread_after_main": 240.0}]
    s = summarize(rounds)
    assert (s["main"], s["thread"], s["thread_after_main"]) == (200.0, 200.0, 150.0)
    assert s["thread/main"] == pytest.approx(0.9)  # 0.9, 1.0, 0.8
    assert s["thread_after_main/main"] == pytest.approx(0.75)  # 0.7, 0.75, 0.8


def test_main__an_unknown_method_is_one_line_naming_the_valid_ones(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["omp_threads.py", "--method", "mocov2"])
    with pytest.raises(SystemExit, match=r"--method 'mocov2' is unknown; valid: .*moco_v2.*supervised"):
        main()
