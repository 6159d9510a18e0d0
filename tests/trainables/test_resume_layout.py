"""A resume whose memory format differs from the saved one (the format is chosen at every launch)."""

from __future__ import annotations

import io

import torch

from trainables.build import build_model, build_optim
from trainables.loop import _restore, _state
from trainables.step import EagerStep

B = 8


def _checkpoint(tiny_cfg) -> bytes:
    """A fused-SGD state saved from channels_last parameters, as ``torch.save`` bytes (a checkpoint).

    Its momentum buffers come from two steps on random gradients shaped like each parameter: a
    channels_last convolution backward at this width is the oneDNN#6035 shape the guard refuses."""
    cfg = tiny_cfg("supervised", **{"model.width": 0.0625, "system.optimizer_impl": "fused"}).resolved()
    method = build_model(cfg, 10, torch.device("cpu"))
    assert method.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    optimizer = build_optim(cfg, method)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        for p in method.parameters():
            p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g))  # p's strides
        optimizer.step()
    buf = io.BytesIO()
    torch.save(_state(1, 2, [], method, optimizer, {}), buf)
    return buf.getvalue()


def _resumed(tiny_cfg, checkpoint: bytes, fused: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The checkpoint restored into a contiguous trial, after 2 steps of fused SGD or of torch's
    per-parameter loop (which indexes each tensor by its strides: the reference)."""
    flat = {"model.width": 0.0625, "system.precision": "fp32", "system.channels_last": False}
    cfg = tiny_cfg("supervised", **flat, **{"system.optimizer_impl": "fused"}).resolved()
    method = build_model(cfg, 10, torch.device("cpu"))
    optimizer = build_optim(cfg, method)
    _restore(torch.load(io.BytesIO(checkpoint), weights_only=True), method, optimizer, {})
    for group in optimizer.param_groups:  # load_state_dict restores the saved group's "fused": True
        group.update(fused=fused, foreach=False)
    g = torch.Generator().manual_seed(1)
    step = EagerStep(method, optimizer, torch.autocast("cpu", enabled=False))
    method.train()
    for i in range(2):
        step([torch.randn(B, 3, 16, 16, generator=g)], torch.randint(0, 10, (B,), generator=g), 0.1, 2 + i, 8)
    return method, optimizer


def test_restore__fused_sgd_resumed_in_another_memory_format_steps_like_the_loop(tiny_cfg):
    """Tolerance: 1e-5 relative on every parameter after 2 resumed steps (fused and loop SGD agree to
    1e-6 when the layouts match, tests/trainables/test_step.py). Before the layout fix, fused SGD
    read the channels_last momentum buffers as if contiguous: conv1 off by up to 1.1 after two steps here."""
    checkpoint = _checkpoint(tiny_cfg)
    loop, _ = _resumed(tiny_cfg, checkpoint, fused=False)
    fused, optimizer = _resumed(tiny_cfg, checkpoint, fused=True)
    for (name, a), b in zip(loop.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    for p, s in optimizer.state.items():
        assert s["momentum_buffer"].stride() == p.stride()
    saved = torch.load(io.BytesIO(checkpoint), weights_only=True)["optimizer"]["state"]
    assert any(not s["momentum_buffer"].is_contiguous() for s in saved.values())  # the case under test
