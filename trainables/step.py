"""One optimizer step of a trial, eager or as one captured CUDA graph.

``build_step(cfg, method, optimizer, device)`` gives a callable ``step(views, labels, lr, step,
total) -> outputs`` that the training loop calls once per batch; both kinds run the method contract
in the same order (``training_step``, backward, ``before_optimizer_step``, optimizer step,
``on_after_step``) and return ``training_step``'s scalars detached (``loss`` and any others, e.g.
supervised's ``train_acc``), without reading them back to the host.

``GraphStep`` (``system.cuda_graph`` on a CUDA device) runs the first steps eagerly on a side
stream (lazy initialisation: cuBLAS workspaces, optimizer state), then captures forward,
backward, the fused SGD step and the method's ``graph_after_step`` into one CUDA graph and
replays it for every later step, copying each batch into the graph's static inputs. Small 32 px
kernels at batch 256 are launch-bound: one graph launch replaces about a thousand kernel launches.
What a captured step needs and does differently:

* the learning rate lives in a device tensor (``set_lr`` writes it in place), which only fused
  SGD reads on the device, so ``system.optimizer_impl`` must be ``fused`` (LARS methods: no graph);
* autocast without its weight-cast cache (a cached cast would be a capture-time tensor);
* the method is ``graph_safe``: its step has fixed shapes and no host reads (``Method`` docstring),
  and its ``before_optimizer_step`` does nothing (it is not replayed).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import torch
from torch import Tensor

from trainables.build import autocast, resolve_precision
from trainables.config import TrialConfig
from trainables.methods import METHODS, Method, method_class
from trainables.optim import set_lr

Step = Callable[[list[Tensor], Tensor, float, int, int], dict[str, Tensor]]
GRAPH_WARMUP = 3  # eager steps before the capture (the PyTorch CUDA-graph recipe warms up on a side stream)


class EagerStep:
    """The training loop's step as it has always run.

    ``forward``: what computes ``training_step``'s outputs; a data-parallel trial passes the
    ``DistributedDataParallel`` wrapper of the method (whose gradient hooks average over ranks).
    """

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        precision: contextlib.AbstractContextManager,
        forward: Callable[[list[Tensor], Tensor], dict[str, Tensor]] | None = None,
    ) -> None:
        self.method, self.optimizer, self.precision = method, optimizer, precision
        self.forward = forward or method.training_step

    def __call__(self, views: list[Tensor], labels: Tensor, lr: float, step: int, total: int) -> dict[str, Tensor]:
        set_lr(self.optimizer, lr)
        with self.precision:
            out = self.forward(views, labels)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.method.before_optimizer_step(step / total)
        self.optimizer.step()
        self.method.on_after_step((step + 1) / total)
        return {k: v.detach() for k, v in out.items()}


def capture_cuda_graph(body: Callable[[], None]) -> Callable[[], None]:
    """Record ``body`` into a CUDA graph (recording runs nothing); returns the graph's replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph.replay


class GraphStep:
    """Eager for ``warmup`` steps (and until ``method.graph_ready()``), then one captured graph.

    ``capture(body) -> replay`` records the step; tests on a CPU pass ``lambda body: body``, whose
    "replay" runs the body again, to check everything around the capture without CUDA.
    """

    def __init__(
        self,
        method: Method,
        optimizer: torch.optim.Optimizer,
        bf16: bool,
        warmup: int = GRAPH_WARMUP,
        capture: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    ) -> None:
        self.method, self.optimizer, self.warmup = method, optimizer, warmup
        device = "cuda" if capture is None else "cpu"
        # Autocast's weight-cast cache would hand the graph tensors cast at capture time.
        precision = (
            torch.autocast(device, dtype=torch.bfloat16, cache_enabled=False) if bf16 else contextlib.nullcontext()
        )
        self.eager = EagerStep(method, optimizer, precision)
        self.precision, self.capture = precision, capture or capture_cuda_graph
        self.side = torch.cuda.Stream() if capture is None else None  # warm-up off the capture's stream
        self.replay: Callable[[], None] | None = None
        self.eager_steps = 0

    def __call__(self, views: list[Tensor], labels: Tensor, lr: float, step: int, total: int) -> dict[str, Tensor]:
        if self.replay is None and (self.eager_steps < self.warmup or not self.method.graph_ready()):
            if self.eager_steps == 0:
                # Before the warm-up, so the eager steps already run what will be captured (a compiled
                # encoder then meets any new input layout, e.g. MoCo's unshuffled keys, outside the capture).
                self.method.graph_prepare()
            self.eager_steps += 1
            if self.side is None:
                return self.eager(views, labels, lr, step, total)
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                loss = self.eager(views, labels, lr, step, total)
            torch.cuda.current_stream().wait_stream(self.side)
            return loss
        if self.replay is None:
            self._capture(views, labels)
            self.method.graph_scalars(step / total)  # the scalars as the eager steps left them
        for static, x in zip(self.static_views, views, strict=True):
            static.copy_(x)
        self.static_labels.copy_(labels)
        set_lr(self.optimizer, lr)
        self.replay()
        self.method.graph_scalars((step + 1) / total)
        return {k: v.clone() for k, v in self.static_out.items()}

    def _capture(self, views: list[Tensor], labels: Tensor) -> None:
        """Record one whole step on static inputs; the replay that follows runs it on this batch."""
        self.static_views = [v.clone() for v in views]
        self.static_labels = labels.clone()
        for group in self.optimizer.param_groups:  # fused SGD reads a tensor lr on the device
            group["lr"] = torch.tensor(float(group["lr"]), device=views[0].device)
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
        self.replay = self.capture(self._body)

    def _body(self) -> None:
        with self.precision:
            out = self.method.training_step(self.static_views, self.static_labels)
        out["loss"].backward()  # into .grad, which is None before the capture: no zero_grad inside
        self.optimizer.step()
        self.method.graph_after_step()
        # Only what the graph computes on the device: a host value made during the capture would be
        # replayed as the capture's constant, so it is not reported from a graph (MoCo reports its
        # momentum from a device tensor; the loop averages each output over the steps that had it).
        self.static_out = {k: v.detach() for k, v in out.items() if v.device == out["loss"].device}


def build_step(
    cfg: TrialConfig,
    method: Method,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    forward: Callable[[list[Tensor], Tensor], dict[str, Tensor]] | None = None,
) -> Step:
    """``GraphStep`` where ``system.cuda_graph`` asks for it and CUDA is there, else ``EagerStep``
    (``forward``: see ``EagerStep``; a data-parallel trial never captures, ``distributed.check_config``).

    Raises ValueError (naming the valid settings) where a graph is asked for on CUDA but the
    method or optimizer cannot be captured; without CUDA the key is ignored with a note on stderr,
    as ``system.precision`` auto adapts a config moved between machines.
    """
    precision = autocast(cfg, device)
    if not cfg.system.cuda_graph or forward is not None:
        return EagerStep(method, optimizer, precision, forward)
    if device.type != "cuda" or not torch.cuda.is_available():
        print(f"system.cuda_graph ignored on {device.type}: it needs a CUDA device", file=sys.stderr, flush=True)
        return EagerStep(method, optimizer, precision)
    check_graph_config(cfg)
    return GraphStep(method, optimizer, bf16=resolve_precision(cfg.system.precision, device) == "bf16")


def check_graph_config(cfg: TrialConfig) -> None:
    """Raise ValueError where ``system.cuda_graph`` cannot capture this trial's step."""
    if not method_class(cfg.method).graph_safe:
        safe = sorted(name for name, cls in METHODS.items() if cls.graph_safe)
        raise ValueError(f"system.cuda_graph is invalid for method {cfg.method!r}; valid methods: {', '.join(safe)}")
    if cfg.optim.optimizer != "sgd" or cfg.system.optimizer_impl != "fused":
        raise ValueError(
            f"system.cuda_graph needs optim.optimizer sgd with system.optimizer_impl fused (the lr is read "
            f"on the device), got {cfg.optim.optimizer} with {cfg.system.optimizer_impl}; valid: sgd + fused"
        )
    if cfg.system.compile and cfg.system.compile_mode in ("reduce-overhead", "max-autotune"):
        raise ValueError(
            f"system.cuda_graph is invalid with system.compile_mode {cfg.system.compile_mode!r}, which "
            "makes CUDA graphs of its own; valid: default, max-autotune-no-cudagraphs"
        )
