"""Epoch metrics of a captured CUDA-graph step, checked on a CPU: MoCo's ``momentum``."""

from __future__ import annotations

import pytest
import torch

import trainables.loop
from tests.trainables.test_step import _batches, _fake_capture, _trial
from trainables.loop import run_trial
from trainables.step import EagerStep, GraphStep


def _host_constants_replayed(method, optimizer):
    """``_fake_capture`` plus what a real capture does to host values: the body's Python runs only
    while recording, so every plain number the method holds (MoCo's ``momentum``) is replayed as it
    was at the capture. Each replay runs the body with those numbers, then puts the live ones back."""
    record = _fake_capture(optimizer)

    def capture(body):
        at_capture = {k: v for k, v in vars(method).items() if type(v) in (bool, int, float)}
        replay = record(body)

        def replay_with_capture_constants():
            live = {k: vars(method)[k] for k in at_capture}
            vars(method).update(at_capture)
            try:
                replay()
            finally:
                vars(method).update(live)

        return replay_with_capture_constants

    return capture


def test_graph_step__moco_reports_each_steps_momentum(tiny_cfg):
    """The momentum a replayed step reports is the one its EMA used: eager's, step by step (to fp32
    rounding of the schedule). Before, it was a host tensor made at the capture (dropped on CUDA)."""
    overrides = {"system.optimizer_impl": "fused", "system.cuda_graph": True}
    _, ref, ref_opt = _trial(tiny_cfg, "moco_v2", **overrides)
    _, graphed, opt = _trial(tiny_cfg, "moco_v2", **overrides)
    batches, total = _batches(2, 8), 12
    eager = EagerStep(ref, ref_opt, torch.autocast("cpu", enabled=False))
    step = GraphStep(graphed, opt, bf16=False, warmup=3, capture=_host_constants_replayed(graphed, opt))
    ref.train()
    graphed.train()
    expected, reported = [], []
    for i, (views, labels) in enumerate(batches):
        lr = 0.1 * (1 - i / total)
        expected.append(float(eager(views, labels, lr, i, total)["momentum"]))
        reported.append(float(step(views, labels, lr, i, total)["momentum"]))
    assert step.replay is not None and step.eager_steps == 3
    assert len(set(expected)) == len(expected)  # the cosine schedule moves every step
    assert reported == pytest.approx(expected, rel=1e-7)


def test_run_trial__an_epoch_metric_is_the_mean_over_the_steps_that_returned_it(tiny_cfg, digits, monkeypatch):
    """A step that stops returning a scalar after its 3 warm-up steps (a captured graph drops what it
    does not compute on the device): the epoch's ``momentum`` is the mean of the 3, not 3 / steps of
    it (0.015 at the gpu preset's 195 steps); ``loss`` is still over every step."""
    steps_out, real_build = [], trainables.loop.build_step

    def build_step(*args, **kwargs):
        inner = real_build(*args, **kwargs)

        def step(*a):
            out = inner(*a)
            steps_out.append({k: float(v) for k, v in out.items()})
            return out if len(steps_out) <= 3 else {k: v for k, v in out.items() if k != "momentum"}

        return step

    monkeypatch.setattr(trainables.loop, "build_step", build_step)
    flat = {"model.width": 0.0625, "method.bn_splits": 1, "system.precision": "fp32", "system.channels_last": False}
    cfg = tiny_cfg(
        "moco_v2", **flat, **{"optim.epochs": 1, "optim.batch_size": 16, "eval.probe": False, "data.train_per_class": 8}
    )
    reports = []
    run_trial(cfg, reports.append, dataset=digits)
    assert len(steps_out) == 5  # 80 images, batch 16
    assert reports[-1]["momentum"] == pytest.approx(sum(s["momentum"] for s in steps_out[:3]) / 3, rel=1e-6)
    assert reports[-1]["loss"] == pytest.approx(sum(s["loss"] for s in steps_out) / 5, rel=1e-6)
