"""Resuming a trial whose step is a captured CUDA graph (the lease's second call resumes one).

On a CPU ``build_step`` never returns a ``GraphStep``, so the loop is handed one here with the
tests' fake capture (``test_step._fake_capture``: each "replay" runs the recorded body). What this
checks without CUDA: the state saved after a capture (the optimizer's lr is then a tensor, which
the state and ``load_state_dict`` must carry), the resumed launch's own warm-up and capture on the
restored model, optimizer and MoCo queue, and that the two launches end where one run ends. What it
cannot check: the real graph's replay on a device after a resume (``test_step``'s CUDA test, a lease).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from tests.trainables.test_loop import load, serialised
from tests.trainables.test_step import _fake_capture
from trainables import loop
from trainables.step import GraphStep, check_graph_config

GRAPH = {
    "model.width": 0.0625,
    "system.precision": "fp32",
    "system.channels_last": False,
    "system.optimizer_impl": "fused",
    "system.cuda_graph": True,
    "optim.epochs": 3,  # 6 steps an epoch: each launch warms up for 3, then captures
    "system.checkpoint_every": 1,
    "eval.eval_every": 0,
    "eval.probe": False,
}
MOCO = {"method.bn_splits": 1, "method.queue_init": "random"}  # the gpu preset's: a graph needs both


def _graph_step(built: list[GraphStep], cfg, method, optimizer, device, forward=None) -> GraphStep:
    """``build_step`` as on CUDA (the config checked, a ``GraphStep``), with the fake capture."""
    assert forward is None  # a data-parallel trial never captures
    check_graph_config(cfg)
    built.append(GraphStep(method, optimizer, bf16=False, capture=_fake_capture(optimizer)))
    return built[-1]


def _floats(state: dict) -> dict[str, torch.Tensor]:
    """The saved model's floating-point tensors: parameters, BN statistics, MoCo's queue."""
    return {k: v for k, v in state["method"].items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.mark.parametrize("method", ["supervised", "moco_v2"])
def test_run_trial__a_graph_step_trial_resumed_after_epoch_1_ends_like_one_run(tiny_cfg, digits, monkeypatch, method):
    """Supervised: bit for bit (the resumed launch's 3 warm-up steps are eager where the single run
    replays, and compute the same). MoCo: 1e-5 relative, 1e-6 absolute, on the epoch losses and
    every saved tensor after epoch 3: in those eager steps its EMA multiplies by a Python float, not
    the momentum tensor (about 1 ulp per update), which 9 more steps carry on; measured: 5.7e-6 on a
    BN running variance, a fifth of the bound, and 6e-7 on a loss."""
    built: list[GraphStep] = []
    monkeypatch.setattr(loop, "build_step", partial(_graph_step, built))
    cfg = tiny_cfg(method, **GRAPH, **(MOCO if method == "moco_v2" else {}))
    states, reports = [], []
    loop.run_trial(cfg, reports.append, save=serialised(states), dataset=digits)
    after_1 = load(states[0])  # through torch.save and back, as the lease's state file
    assert after_1["epoch"] == 1 and isinstance(after_1["optimizer"]["param_groups"][0]["lr"], torch.Tensor)

    resumed_states, resumed_reports = [], []
    loop.run_trial(cfg, resumed_reports.append, resume=after_1, save=serialised(resumed_states), dataset=digits)
    assert [(s.eager_steps, s.replay is not None) for s in built] == [(3, True), (3, True)]
    assert [r["epoch"] for r in resumed_reports] == [2, 3]
    tol = {"rtol": 1e-5, "atol": 1e-6} if method == "moco_v2" else {"rtol": 0.0, "atol": 0.0}
    torch.testing.assert_close([r["loss"] for r in resumed_reports], [r["loss"] for r in reports[1:]], **tol)
    end, resumed_end = load(states[-1]), load(resumed_states[-1])
    assert end["epoch"] == resumed_end["epoch"] == 3 and end["step"] == resumed_end["step"] == 18
    torch.testing.assert_close(_floats(resumed_end), _floats(end), **tol)
