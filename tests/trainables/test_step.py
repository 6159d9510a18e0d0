"""The training step's speed levers (issue 24) against the eager fp32 step they replace.

Each lever that changes numerics is held to the current path with a stated tolerance; a lever
that must not change them (the MoCo queue's host mirror, padded evaluation batches) exactly or to
the rounding of a different batch size.
"""

from __future__ import annotations

import pytest
import torch

from trainables.build import build_model, build_optim
from trainables.step import EagerStep, GraphStep, build_step, check_graph_config

B = 8  # the brief's compile-test scale: batch 8, 16 px, width 0.0625


def _trial(tiny_cfg, method: str, **overrides):
    flat = {"model.width": 0.0625, "system.precision": "fp32", "system.channels_last": False}
    if method == "moco_v2":
        flat |= {"method.bn_splits": 1, "method.queue_size": 24, "method.queue_init": "random"}
    cfg = tiny_cfg(method, **{**flat, **overrides}).resolved()
    method_ = build_model(cfg, 10, torch.device("cpu"))
    return cfg, method_, build_optim(cfg, method_)


def _batches(n_views: int, steps: int) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        ([torch.randn(B, 3, 16, 16, generator=g) for _ in range(n_views)], torch.randint(0, 10, (B,), generator=g))
        for _ in range(steps)
    ]


def _run(step, method, batches, total: int = 12) -> list[float]:
    method.train()
    return [
        float(step(views, labels, 0.1 * (1 - i / total), i, total)["loss"]) for i, (views, labels) in enumerate(batches)
    ]


def _params(method) -> list[torch.Tensor]:
    """Floating-point parameters and persistent buffers (BN statistics, MoCo's queue)."""
    return [
        t.detach().clone()
        for t in method.state_dict().values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_optimizer_impl__foreach_and_fused_sgd_match_the_per_parameter_loop(tiny_cfg, impl):
    """Tolerance: 1e-6 relative on every parameter after 4 steps (same formula, other kernels)."""
    _, ref, ref_opt = _trial(tiny_cfg, "supervised", **{"system.optimizer_impl": "loop"})
    _, fast, fast_opt = _trial(tiny_cfg, "supervised", **{"system.optimizer_impl": impl})
    assert ref_opt.param_groups[0]["foreach"] is False
    assert fast_opt.param_groups[0]["foreach" if impl == "foreach" else "fused"] is True
    batches = _batches(1, 4)
    _run(EagerStep(ref, ref_opt, torch.autocast("cpu", enabled=False)), ref, batches)
    _run(EagerStep(fast, fast_opt, torch.autocast("cpu", enabled=False)), fast, batches)
    for a, b in zip(_params(ref), _params(fast), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_foreach_ema__moco_trains_like_the_per_parameter_update(tiny_cfg):
    """``_foreach_lerp_`` vs ``mul_``/``add_``: ~1 ulp per update; 1e-5 relative after 6 steps."""
    _, ref, ref_opt = _trial(tiny_cfg, "moco_v2")
    _, fast, fast_opt = _trial(tiny_cfg, "moco_v2", **{"system.foreach_ema": True})
    assert fast.foreach_ema and not ref.foreach_ema
    batches = _batches(2, 6)
    ref_losses = _run(EagerStep(ref, ref_opt, torch.autocast("cpu", enabled=False)), ref, batches)
    fast_losses = _run(EagerStep(fast, fast_opt, torch.autocast("cpu", enabled=False)), fast, batches)
    torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(_params(ref.key_backbone), _params(fast.key_backbone), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def _fake_capture(optimizer):
    """A CPU stand-in for ``capture_cuda_graph``: recording runs nothing, each replay runs the
    body, into gradients that a real graph's replay overwrites rather than accumulates."""

    def capture(body):
        def replay():
            optimizer.zero_grad(set_to_none=True)
            body()

        return replay

    return capture


@pytest.mark.parametrize("method", ["supervised", "moco_v2"])
def test_graph_step__around_the_capture_steps_like_eager(tiny_cfg, method):
    """Everything a captured step changes besides the capture: the lr as a tensor read by fused SGD,
    static inputs, MoCo's EMA from a momentum tensor and no key shuffle. Tolerance: 1e-4 relative on
    losses and parameters after 3 eager and 5 "replayed" steps (plain BN reduces the unshuffled
    batch in another order; the EMA rounds differently)."""
    overrides = {"system.optimizer_impl": "fused", "system.cuda_graph": True}
    cfg, ref, ref_opt = _trial(tiny_cfg, method, **overrides)
    _, graphed, opt = _trial(tiny_cfg, method, **overrides)
    check_graph_config(cfg)
    batches = _batches(ref.n_views, 8)
    ref_losses = _run(EagerStep(ref, ref_opt, torch.autocast("cpu", enabled=False)), ref, batches)
    step = GraphStep(graphed, opt, bf16=False, warmup=3, capture=_fake_capture(opt))
    losses = _run(step, graphed, batches)
    assert step.replay is not None and step.eager_steps == 3
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.1 * (1 - 7 / 12))
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(_params(ref), _params(graphed), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    if method == "moco_v2":
        assert graphed.momentum == pytest.approx(ref.momentum) and not graphed.shuffle_keys
        assert float(graphed.graph_momentum) == pytest.approx(graphed.momentum)


def test_graph_step__moco_waits_for_a_full_queue_before_capturing(tiny_cfg):
    _, method, opt = _trial(tiny_cfg, "moco_v2", **{"method.queue_init": "grow", "system.optimizer_impl": "fused"})
    step = GraphStep(method, opt, bf16=False, warmup=1, capture=_fake_capture(opt))
    _run(step, method, _batches(2, 5))  # 8 keys per step and queue: full (24) after step 3, captured at step 4
    assert step.eager_steps == 3 and step.replay is not None


def test_build_step__cuda_graph_without_cuda_is_eager_with_a_note(tiny_cfg, capsys):
    cfg, method, opt = _trial(tiny_cfg, "supervised", **{"system.cuda_graph": True, "system.optimizer_impl": "fused"})
    assert isinstance(build_step(cfg, method, opt, torch.device("cpu")), EagerStep)
    assert "system.cuda_graph ignored on cpu" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("method", "overrides", "named"),
    [
        ("byol", {"system.optimizer_impl": "foreach"}, ["'byol'", "moco_v2", "supervised"]),
        ("supervised", {"system.optimizer_impl": "foreach"}, ["fused"]),
        (
            "supervised",
            {"system.optimizer_impl": "fused", "system.compile": True, "system.compile_mode": "reduce-overhead"},
            ["reduce-overhead", "max-autotune-no-cudagraphs"],
        ),
    ],
)
def test_check_graph_config__refuses_what_cannot_be_captured_naming_the_valid_settings(
    tiny_cfg, method, overrides, named
):
    cfg = tiny_cfg(method, **{"system.cuda_graph": True, **overrides}).resolved()
    with pytest.raises(ValueError, match=r"system\.cuda_graph") as err:
        check_graph_config(cfg)
    for piece in named:
        assert piece in str(err.value)


def test_graph_prepare__moco_with_split_bn_is_refused(tiny_cfg):
    cfg = tiny_cfg("moco_v2", **{"model.width": 0.0625}).resolved()  # bn_splits 2 (tests' SMALL_PARAMS)
    with pytest.raises(ValueError, match=r"bn_splits 2.*valid: method\.bn_splits 1"):
        build_model(cfg, 10, torch.device("cpu")).graph_prepare()


def test_graph_step__on_cuda_matches_eager(tiny_cfg):
    """The real capture. Tolerance as the CPU stand-in's test, on fp32."""
    if not torch.cuda.is_available():
        pytest.skip(
            "CUDA is absent: the captured CUDA-graph step runs only on a GPU (its plumbing is "
            "checked on the CPU by test_graph_step__around_the_capture_steps_like_eager)"
        )
    dev = torch.device("cuda")
    for method in ("supervised", "moco_v2"):
        overrides = {"system.optimizer_impl": "fused", "system.cuda_graph": True, "system.device": "cuda"}
        cfg, ref, _ = _trial(tiny_cfg, method, **overrides)
        _, graphed, _ = _trial(tiny_cfg, method, **overrides)
        ref, graphed = ref.to(dev), graphed.to(dev)
        ref_opt, opt = build_optim(cfg, ref), build_optim(cfg, graphed)
        batches = [([v.to(dev) for v in views], y.to(dev)) for views, y in _batches(ref.n_views, 8)]
        ref_losses = _run(EagerStep(ref, ref_opt, torch.autocast("cuda", enabled=False)), ref, batches)
        step = build_step(cfg, graphed, opt, dev)
        assert isinstance(step, GraphStep)
        losses = _run(step, graphed, batches)
        assert step.replay is not None
        torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
