"""MoCo v2 (Chen et al. 2020) as the study ran it: solo-learn's symmetric "mocov2plus"."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables import distributed
from trainables.backbone import split_batchnorm
from trainables.heads import mlp
from trainables.losses import info_nce
from trainables.methods.base import Method, cosine_momentum, ema_update, register_method


@dataclasses.dataclass(frozen=True)
class MocoParams:
    proj_hidden: int = 2048
    proj_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 32768
    momentum_base: float = 0.99
    momentum_final: float = 0.999
    symmetric: bool = True
    bn_splits: int = 8
    shuffle_seed: int = 0
    proj_batchnorm: bool = False  # BN after the projector's hidden layer (MoCo v3 / SimCLR style)
    # "grow": negatives are only keys already enqueued (in-batch keys at the very first step);
    # "random": the queue starts as K random unit vectors (MoCo, solo-learn). See the class note.
    queue_init: str = "grow"

    def __post_init__(self) -> None:
        if self.queue_init not in ("grow", "random"):
            raise ValueError(f"method.queue_init {self.queue_init!r} is invalid; valid: grow, random")


@register_method
class MocoV2(Method):
    """Query encoder + momentum key encoder + a queue of negative keys.

    The loss is the symmetric one the study used (solo-learn ``mocov2plus``): both views act as
    query and key, ``(InfoNCE(q1, k2, queue_2) + InfoNCE(q2, k1, queue_1)) / 2``, one queue per
    view. ``symmetric=False`` gives the original asymmetric MoCo loss with a single queue.

    BN cheating guard: both encoders use SplitBatchNorm (``bn_splits`` interleaved sub-batches),
    and the key encoder sees the batch in a shuffled order, so a query and its key are never
    normalised with the same statistics (moco CIFAR demo). ``bn_splits=1`` turns it off, as the
    study's code (solo-learn, one GPU) has it; on CPU with channels_last it also makes a step
    ~1.4x faster, since the interleaved split of a channels_last activation is a copy.

    NOTE: the 2048-128 projector has no BN (solo-learn mocov2plus); momentum 0.99 -> 0.999 on a
    cosine; queue 32768 and T 0.2 from the study's ``script/cifar_mocov2.sh``.

    NOTE (deviation, ``queue_init="grow"``): MoCo fills the queue with random unit vectors. For
    the first K/B steps every query is then pushed away from random directions and towards keys
    that, at initialisation, all point nearly the same way; on CIFAR-10 at CPU budgets one such
    step at lr 0.3 collapses the head (cosine of every query to the mean 0.9996, gradients
    ~0, loss stuck at ln(K+1)) and the run never recovers. Growing the queue from real keys
    avoids it; ``queue_init="random"`` restores the original. The gpu preset
    (``sweeps/configs/paper_table1_gpu.yaml``) runs the study's: random queue, ``bn_splits=1``.

    The queue is a preallocated ring buffer written at a device-side pointer; how much of it is
    filled is mirrored on the host (``_filled``), so a step never waits for the device to say.
    Data-parallel (``for_ranks``): ``bn_splits`` stays the number of BN groups of the global batch.
    With ``bn_splits`` 1 every BN is synchronised over the ranks (as one device); otherwise each rank
    splits its shard in ``bn_splits / ranks`` groups and the key encoder sees a batch shuffled across
    ranks (``distributed.shuffled_keys``, facebookresearch/moco's shuffle BN); the queue takes every
    rank's keys, so it is the same on all ranks.

    One CUDA graph can hold the whole step (``graph_safe``) once the queue is full (fixed shapes)
    and with plain BN (``bn_splits=1``), where the key shuffle is dropped: plain BN's statistics do
    not depend on the order of the batch, and the shuffle draws from a CPU generator.
    """

    name = "moco_v2"
    Params = MocoParams
    graph_safe = True
    data_parallel = True
    defaults = {"optimizer": "sgd", "lr": 0.3, "weight_decay": 1e-4, "augmentation": "moco_v2"}

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, params: MocoParams) -> None:
        if params.bn_splits > 1:
            split_batchnorm(backbone, params.bn_splits)
        super().__init__(backbone, feature_dim, num_classes, params)
        self.projector = mlp(feature_dim, params.proj_hidden, params.proj_dim, batchnorm=params.proj_batchnorm)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        n_queues = 2 if params.symmetric else 1
        g = torch.Generator().manual_seed(params.shuffle_seed)
        self.register_buffer(
            "queue", F.normalize(torch.randn(n_queues, params.queue_size, params.proj_dim, generator=g), dim=-1)
        )
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.tensor(params.queue_size if params.queue_init == "random" else 0))
        self.shuffle_generator = g
        self.momentum = params.momentum_base
        self._filled: int | None = int(self.queue_filled)  # host mirror of queue_filled (None: read it once)
        self.shuffle_keys = True  # False only in a captured step with plain BN (graph_prepare)
        # self.momentum on the device: what a captured step's EMA reads, and the reported momentum (a
        # host value made in the step would be replayed as the capture's constant).
        self.register_buffer("graph_momentum", torch.tensor(self.momentum), persistent=False)

    @classmethod
    def for_ranks(cls, params: MocoParams, ranks: int) -> MocoParams:
        if params.bn_splits == 1:
            return params
        if params.bn_splits % ranks:
            raise ValueError(
                f"method.bn_splits {params.bn_splits} cannot be shared by {ranks} workers per trial (BN groups of "
                f"the global batch, split evenly over the ranks); valid: 1 or a multiple of {ranks}"
            )
        return dataclasses.replace(params, bn_splits=params.bn_splits // ranks)

    def get_extra_state(self) -> dict:
        return {"shuffle_generator": self.shuffle_generator.get_state(), "momentum": self.momentum}

    def set_extra_state(self, state: dict) -> None:
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self.momentum = state["momentum"]
        self.graph_momentum.fill_(self.momentum)
        self._filled = None  # queue_filled was loaded too: re-read at the next step

    def query(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.backbone(x)).float(), dim=1)

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """Keys computed on a shuffled batch (then unshuffled): the BN-cheating guard."""
        return self.keys(x)[0]

    @torch.no_grad()
    def keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(this rank's keys (b, D), every rank's keys (B, D)): the same tensor in one process."""
        if distributed.ranks().size > 1:
            if self.shuffle_keys:
                return distributed.shuffled_keys(self._encode_key, x, self.shuffle_generator)
            k = self._encode_key(x)
            return k, distributed.gather(k)
        if not self.shuffle_keys:
            k = self._encode_key(x)
            return k, k
        perm = torch.randperm(x.shape[0], generator=self.shuffle_generator)
        # Pinned, the copy to a GPU does not wait for the kernels queued before it (same numbers).
        perm = perm.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else perm
        k = self._encode_key(x[perm])[perm.argsort()]
        return k, k

    def _encode_key(self, x: Tensor) -> Tensor:
        return F.normalize(self.key_projector(self.key_backbone(x)).float(), dim=1)

    def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
        q1, q2 = self.query(views[0]), self.query(views[1])
        (k1, all_k1), (k2, all_k2) = self.keys(views[0]), self.keys(views[1])
        filled = self.queue_fill()
        # A copy: q's gradient reads the queue in backward, and the keys are enqueued in place below
        # (2 K D floats, 34 MB at K 32768: ~20 us of a GPU's bandwidth).
        queue = self.queue[:, :filled].clone() if filled else [None, None]  # none yet: in-batch negatives
        t = self.params.temperature
        at = distributed.ranks().rank * k1.shape[0]  # this rank's keys among every rank's (in-batch negatives)
        if self.params.symmetric:
            loss = (info_nce(q1, k2, queue[1], t, all_k2, at) + info_nce(q2, k1, queue[0], t, all_k1, at)) / 2
            self._enqueue(torch.stack([all_k1, all_k2]))
        else:
            loss = info_nce(q1, k2, queue[0], t, all_k2, at)
            self._enqueue(all_k2[None])
        return {"loss": loss, "momentum": self.graph_momentum.clone()}  # this step's EMA momentum

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """keys: (n_queues, B, D); written at the pointer, wrapping around."""
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(keys.shape[1], device=keys.device)) % size
        self.queue[:, idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[1]) % size)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + keys.shape[1], max=size))
        self._filled = min(self.queue_fill() + keys.shape[1], size)

    def queue_fill(self) -> int:
        """Keys in the queue (``queue_filled``), from the host mirror."""
        if self._filled is None:
            self._filled = int(self.queue_filled)
        return self._filled

    def graph_ready(self) -> bool:
        return self.queue_fill() == self.queue.shape[1]

    def graph_prepare(self) -> None:
        if self.params.bn_splits > 1:
            raise ValueError(
                f"system.cuda_graph is invalid for moco_v2 with method.bn_splits {self.params.bn_splits}: "
                "the split-BN key shuffle draws from a CPU generator; valid: method.bn_splits 1"
            )
        self.shuffle_keys = False
        self.graph_momentum.fill_(self.momentum)

    def graph_after_step(self) -> None:
        ema_update(self.key_backbone, self.backbone, self.graph_momentum)
        ema_update(self.key_projector, self.projector, self.graph_momentum)

    def graph_scalars(self, progress: float) -> None:
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
        self.graph_momentum.fill_(self.momentum)

    def on_after_step(self, progress: float) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum, self.foreach_ema)
        ema_update(self.key_projector, self.projector, self.momentum, self.foreach_ema)
        self.momentum = cosine_momentum(self.params.momentum_base, self.params.momentum_final, progress)
        self.graph_momentum.fill_(self.momentum)
