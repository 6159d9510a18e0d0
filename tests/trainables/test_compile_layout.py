"""system.compile keeps the memory format the guard chose (trainables.memory_format): inductor's
layout optimisation would run every CPU convolution channels_last, past the guard, into oneDNN#6035."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trainables.build
from trainables.build import build_model, compile_encoders


@pytest.mark.parametrize("channels_last", [False, True])
def test_build_model__compile_on_a_cpu_keeps_the_layout_the_guard_chose(tiny_cfg, monkeypatch, channels_last):
    calls = []
    monkeypatch.setattr(trainables.build, "compile_encoders", lambda method, mode, **kw: calls.append(kw))
    flat = {"model.width": 0.0625, "system.compile": True, "system.channels_last": channels_last}
    build_model(tiny_cfg("supervised", **flat).resolved(), 10, torch.device("cpu"))
    # contiguous: inductor must not switch it; channels_last: inductor's own choice is the same format
    assert calls == [{"keep_layout": not channels_last}]


class _Encoders(nn.Module):
    """The smallest ``compile_encoders`` target: a backbone of two convolutions, the second a strided
    1x1 with 8 input channels (below an AVX-512 CPU's 16-channel block: the oneDNN#6035 signature)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 16, 1, 2, bias=False))


@pytest.mark.slow  # the real inductor: ~3 s here when the layout is kept (extern convolutions only)
def test_compile_encoders__keep_layout_turns_off_inductors_channels_last_convolutions(monkeypatch):
    """Every graph inductor lowers (forward, backward) keeps the inputs' layout; gradients within 1e-5
    of fp64 (relative norm). Without keep_layout inductor decides channels_last for the forward on any
    mkldnn CPU (torch/_inductor/graph.py ``decide_layout_opt``): this test then sees ``[True, False]``
    (and compiles C++ layout conversions, ~25 s on a cold cache)."""
    import torch._functorch.config
    import torch._inductor.config
    import torch._inductor.graph

    decided, lowering_init = [], torch._inductor.graph.GraphLowering.__init__

    def spy(self, *args, **kwargs):
        lowering_init(self, *args, **kwargs)
        decided.append(self.layout_opt)

    monkeypatch.setattr(torch._inductor.graph.GraphLowering, "__init__", spy)
    # Cached graphs would skip the lowering this test watches.
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", False)
    monkeypatch.setattr(trainables.build, "COMPILE_BACKEND", "inductor")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = _Encoders(), torch.randn(2, 3, 8, 8)
    model.double().backbone(x.double()).square().sum().backward()
    expected = [p.grad.float() for p in model.parameters()]
    model.float().zero_grad(set_to_none=True)
    assert compile_encoders(model, keep_layout=True) == ["backbone"]
    model.backbone(x).square().sum().backward()
    assert len(decided) == 2 and not any(decided)  # forward and backward graphs, neither channels_last
    for p, g in zip(model.parameters(), expected, strict=True):
        assert ((p.grad - g).norm() / g.norm()).item() < 1e-5
    torch._dynamo.reset()
