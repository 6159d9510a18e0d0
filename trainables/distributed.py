"""Data parallelism inside one trial, in plain ``torch.distributed`` (no Ray).

Ray Train starts the processes and the process group (``trainables.ray_train_adapter``); what the
ranks then do differently from a single process lives here, so it is testable with two gloo
processes and no Ray:

* every rank draws the same global batch from the same generators (the single process's data
  order and augmentation) and keeps its contiguous shard (``batch_rows``);
* gradients are averaged by ``DistributedDataParallel`` (``wrap``);
* BatchNorm statistics are taken over the same groups as in the single process: a plain BN becomes
  ``SyncBatchNorm`` (the whole global batch), a MoCo ``SplitBatchNorm2d`` keeps its groups inside
  each rank and MoCo shuffles its keys across ranks (``shuffled_keys``);
* what a loss couples across the batch is gathered by its method: the embeddings of SimCLR,
  SupCon and Barlow Twins (``gather_batch``, with gradient), MoCo v3's keys (``gather``), DINO's
  teacher mean (``average``);
* epoch sums of the step's scalars are averaged over ranks (``mean_over_ranks``);
* every rank checks its own machine for bf16 and channels_last, and all take the safe choice if
  any says no (``agreed_precision``, ``agreed_memory_format``).

Each rank loads, decodes and augments only its shard (``batch_rows``,
``trainables.data.batches.train_batches``), drawing every random number as for the whole batch, so
the views are the single process's; only a corruption that draws per image (``randglo``) is
applied to the whole global batch first.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainables.backbone import SplitBatchNorm2d
from trainables.memory_format import CHANNELS_LAST, CONTIGUOUS


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in the trial: ``rank`` in ``0 .. size - 1``."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that evaluates and writes checkpoints."""
        return self.rank == 0


def ranks() -> Ranks:
    """The current process group's rank and size; ``Ranks()`` (one process) without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size())


def shard(x: Tensor, where: Ranks) -> Tensor:
    """Rank ``r``'s contiguous slice ``[r b, (r + 1) b)`` of a global batch (B, ...), b = B / size."""
    if where.size == 1:
        return x
    if x.shape[0] % where.size:
        raise ValueError(f"batch {x.shape[0]} is not divisible by {where.size} ranks")
    return x[shard_rows(x.shape[0] // where.size, where)]


def batch_rows(batch: int, where: Ranks) -> slice | None:
    """This rank's rows of every global batch of ``batch`` rows, as ``shard`` keeps them (None: a
    single process keeps them all).

    Raises:
        ValueError: ``batch`` does not divide into ``where.size`` equal shards.
    """
    if batch % where.size:
        raise ValueError(f"a global batch of {batch} does not split over {where.size} ranks; valid: a multiple of it")
    return None if where.size == 1 else shard_rows(batch // where.size, where)


def shard_rows(b: int, where: Ranks) -> slice:
    """Rank ``r``'s rows ``slice(r b, (r + 1) b)`` of a global batch whose shards have ``b`` rows."""
    return slice(where.rank * b, (where.rank + 1) * b)


@torch.no_grad()
def gather(x: Tensor) -> Tensor:
    """(b, ...) on each rank -> (size b, ...): every rank's tensor, in rank order (no gradient)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.rank, ctx.size = dist.get_rank(), dist.get_world_size()
        return gather(x).view(ctx.size, *x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss may depend on every slice
        return grad[ctx.rank]


def gather_with_grad(x: Tensor) -> Tensor:
    """(...) on each rank -> (size, ...), differentiable (the sum of the ranks' losses)."""
    return _GatherWithGrad.apply(x)


def gather_batch(x: Tensor) -> Tensor:
    """(b, ...) on each rank -> (size b, ...): the global batch (shards in rank order, as ``shard``
    cut them), differentiable as ``gather_with_grad``. For losses that couple a batch's samples."""
    return gather_with_grad(x).flatten(0, 1)


@torch.no_grad()
def average(x: Tensor) -> Tensor:
    """The ranks' mean of ``x`` (the same shape on every rank), one all-reduce, no gradient: for
    equal shards, the mean of the shards' means is the global batch's mean."""
    total = x.clone()  # all_reduce works in place
    dist.all_reduce(total)
    return total / dist.get_world_size()


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across all ranks.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d/2d``, so checkpoints move
    between single-process and data-parallel trials. Each rank's per-channel mean and biased
    variance are gathered (with gradient) and combined exactly for equal shards:
    ``mean = mean_r m_r``, ``var = mean_r (v_r + (m_r - mean)^2)``.

    NOTE: ``torch.nn.SyncBatchNorm`` refuses CPU tensors (gloo), so this one serves both devices.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a (B, C, ...) input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        xf = x.float()
        g_mean, g_var, total = _global_stats(xf)
        self._update_running(g_mean.detach(), g_var.detach(), total)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (xf - g_mean.view(shape)) * torch.rsqrt(g_var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, var: Tensor, total: float) -> None:
        """As ``F.batch_norm``: momentum (or the cumulative average), unbiased variance."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
        unbiased = var * total / max(total - 1, 1)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)


@torch.compiler.disable  # collectives stay out of a compiled encoder's graph (the rest of BN compiles)
def _global_stats(x: Tensor) -> tuple[Tensor, Tensor, float]:
    """Per-channel mean and biased variance of ``x`` (B, C, ...) float over every rank's batch, with
    gradient, and the number of values per channel. Every rank holds a shard of the same size
    (``shard``), so the ranks weigh alike and nothing is read back to the host."""
    var, mean = torch.var_mean(x, dim=[0, *range(2, x.dim())], unbiased=False)
    stats = gather_with_grad(torch.stack([mean, var]))  # (ranks, 2, C)
    g_mean = stats[:, 0].mean(0)
    g_var = (stats[:, 1] + (stats[:, 0] - g_mean) ** 2).mean(0)
    return g_mean, g_var, x.numel() / x.shape[1] * stats.shape[0]


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every plain BatchNorm (1d/2d) of ``module`` by ``SyncBatchNorm`` with its state;
    ``SplitBatchNorm2d`` stays (its groups are per rank by design)."""
    for name, child in module.named_children():
        plain = isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(child, SplitBatchNorm2d)
        if plain:
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.plain_type = type(child)  # what backbone.plain_batchnorm restores
            for mine, theirs in zip(sync.parameters(), child.parameters(), strict=True):
                mine.requires_grad_(theirs.requires_grad)  # e.g. MoCo's key encoder: no gradient
            state = [*child.parameters(), *child.buffers()]
            setattr(module, name, sync.to(state[0].device) if state else sync)
        else:
            sync_batchnorm(child)
    return module


@torch.no_grad()
def shuffled_keys(encode: Callable[[Tensor], Tensor], x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """MoCo's shuffle-BN across ranks (He et al. 2020, Sec. 3.3; facebookresearch/moco's batch shuffle).

    The global batch is permuted (one ``randperm`` of the global size from ``generator``, which is
    seeded alike on every rank, so no broadcast is needed and a single process draws the same
    permutation), each rank encodes its slice of the permuted batch, and the keys are gathered back
    into the original order.

    Args:
        encode: (b, C, H, W) -> (b, D), the key encoder (its BN sees a shuffled slice).
        x: (b, C, H, W), this rank's shard of the global batch.
        generator: CPU generator, identical state on every rank.

    Returns:
        (this rank's keys (b, D), every rank's keys (size b, D)), both in the batch's order.
    """
    where = ranks()
    everything = gather(x)
    perm = torch.randperm(everything.shape[0], generator=generator).to(x.device)
    keys = gather(encode(shard(everything[perm], where)))[perm.argsort()]
    return shard(keys, where), keys


def check_config(cfg, size: int) -> None:
    """ValueError (one line) where the TrialConfig ``cfg`` cannot train on ``size`` ranks."""
    from trainables.methods import build_params, method_class

    if size == 1:
        return
    method_class(cfg.method).for_ranks(build_params(cfg.method, dict(cfg.method_params)), size)
    if cfg.optim.batch_size % size:
        raise ValueError(
            f"optim.batch_size {cfg.optim.batch_size} cannot be split over {size} workers per trial; "
            f"valid: a multiple of {size}"
        )
    if cfg.system.cuda_graph:
        raise ValueError(
            f"system.cuda_graph is invalid with {size} workers per trial (a captured step holds no "
            "gradient all-reduce); valid: system.cuda_graph=false, or one worker per trial"
        )


def wrap(method: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``method`` (whose ``forward`` is ``training_step``).

    ``forward_sync_buffers=False``: BN statistics and MoCo's queue are kept in step by the ranks
    themselves (sync BN, gathered keys); rank 0's would overwrite per-rank split-BN statistics at
    every step (at the start every rank holds the same buffers, which DDP syncs once).
    """
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids, forward_sync_buffers=False)


def mean_over_ranks(sums: dict[str, float], where: Ranks) -> dict[str, float]:
    """The ranks' mean of each value (one all-reduce): a shard mean's average is the batch mean."""
    if where.size == 1 or not sums:
        return sums
    keys = sorted(sums)
    total = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return {k: float(v) / where.size for k, v in zip(keys, total.tolist(), strict=True)}


def refusing_ranks(ok: bool, where: Ranks) -> list[int]:
    """The ranks whose ``ok`` is False, in rank order and the same on every rank (one all-gather)."""
    if where.size == 1:
        return [] if ok else [where.rank]
    flag = torch.tensor([int(ok)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    return [r for r, v in enumerate(gather(flag).tolist()) if not v]


def agreed_precision(precision: str, where: Ranks) -> str:
    """``bf16`` only if every rank resolved bf16 on its own machine, else ``fp32`` on all of them.

    On heterogeneous nodes (an AVX512-BF16 CPU next to an AVX2 one) ``system.precision: auto``
    resolves differently per rank, and DDP would average bf16 and fp32 gradients without a word.
    One process: ``precision`` as given.
    """
    if where.size == 1:
        return precision
    refusing = refusing_ranks(precision == "bf16", where)
    if precision == "bf16" and refusing:
        print(f"training in fp32: rank(s) {_listed(refusing)} resolved fp32 on their machine", file=sys.stderr)
        return "fp32"
    return precision


def agreed_memory_format(memory: dict[str, str], where: Ranks) -> dict[str, str]:
    """``memory_format.choose``'s result, contiguous on every rank if any rank's own checks refused
    channels_last (DDP refuses parameters whose strides differ between ranks). One process: as given.

    Args:
        memory: ``{"memory_format": ..., "memory_format_reason": ...}`` from this rank's checks.
    """
    if where.size == 1:
        return memory
    refusing = refusing_ranks(memory["memory_format"] == CHANNELS_LAST, where)
    if memory["memory_format"] != CHANNELS_LAST or not refusing:
        return memory
    reason = (
        f"rank(s) {_listed(refusing)} refused channels_last on their machine (their stderr says why), and all "
        f"ranks train in one format; here: {memory['memory_format_reason']}"
    )
    print(f"training in the contiguous (NCHW) format: {reason}", file=sys.stderr)
    return {"memory_format": CONTIGUOUS, "memory_format_reason": reason}


def _listed(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks)
