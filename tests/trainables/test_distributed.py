"""Data parallelism without Ray: two gloo processes (torch.multiprocessing) against one process.

Tolerance of the trial comparison: the first step sees the same weights and the same global batch,
so its loss agrees to float rounding (~1e-7); later steps differ only by the order of float
reductions (a shard's convolution, the all-reduce), which training amplifies about fivefold per
step here. A single process run with 1 and with 2 threads drifts by the same amounts (measured:
2e-6 at step 4, 5e-4 at step 8), so three steps are compared at 1e-5.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.trainables.conftest import tiny_flat
from trainables import distributed
from trainables.build import build_model
from trainables.config import TrialConfig
from trainables.distributed import Ranks, SyncBatchNorm, shard
from trainables.loop import run_trial
from trainables.methods import method_class

RANKS = 2
# moco_v2: sync BN, keys shuffled and enqueued across ranks; moco_v3: every rank's keys as negatives
DATA_PARALLEL = ("supervised", "moco_v2", "moco_v3")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, tmp_path, *args) -> list:
    """Run ``fn(rank, tmp_path, *args)`` in a 2-rank gloo group; returns each rank's saved result."""
    mp.spawn(_entry, args=(fn, _port(), tmp_path, args), nprocs=RANKS)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(RANKS)]


def _entry(rank: int, fn, port: int, tmp_path, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=RANKS)
    try:
        torch.save(fn(rank, *args), tmp_path / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _collectives(rank: int) -> dict:
    where = distributed.ranks()
    torch.manual_seed(0)  # the same global batch and BN on every rank
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    bn = torch.nn.BatchNorm2d(4)
    torch.nn.init.uniform_(bn.weight)
    torch.nn.init.uniform_(bn.bias)
    sync = SyncBatchNorm(4)
    sync.load_state_dict(bn.state_dict())
    full = x.clone().requires_grad_()
    ref = bn(full)
    (ref**3).sum().backward()
    mine = shard(x, where).clone().requires_grad_()
    out = sync(mine)
    (out**3).sum().backward()
    weight_grad = sync.weight.grad.clone()
    dist.all_reduce(weight_grad)  # DDP would average; the sum of the ranks' losses is the full batch's
    seen = []
    local, every = distributed.shuffled_keys(lambda v: seen.append(v) or v * 2, shard(x, where), torch.Generator())
    return {
        "out": (out.detach(), shard(ref.detach(), where)),
        "input_grad": (mine.grad, shard(full.grad, where)),
        "weight_grad": (weight_grad, bn.weight.grad),
        "running_var": (sync.running_var, bn.running_var),
        "running_mean": (sync.running_mean, bn.running_mean),
        "keys": (local, every, x, seen[0], torch.randperm(8, generator=torch.Generator())),
        "where": where,
    }


def test_distributed__sync_bn_and_key_shuffle_match_one_process(tmp_path):
    results = _spawn(_collectives, tmp_path)
    for rank, res in enumerate(results):
        assert res["where"] == Ranks(rank, RANKS)
        for key in ("out", "input_grad", "running_var", "running_mean"):
            torch.testing.assert_close(*res[key], rtol=1e-5, atol=1e-5, msg=key)
        torch.testing.assert_close(*res["weight_grad"], rtol=1e-5, atol=1e-3)  # a sum of cubes: large values
        local, every, x, seen, perm = res["keys"]
        torch.testing.assert_close(every, x * 2)  # every rank's keys, back in the batch's order
        torch.testing.assert_close(local, shard(x * 2, Ranks(rank, RANKS)))
        torch.testing.assert_close(seen, x[perm][rank * 4 : (rank + 1) * 4])  # a slice of the shuffled batch


def _flat(method: str, cache) -> dict:
    # 40 images, batch 32: one step per epoch, so each epoch's loss is one step's; fp32 (bf16 rounds
    # differently at another batch size).
    return tiny_flat(
        method,
        cache,
        **{
            "data.train_per_class": 4,
            "optim.epochs": 3,
            "eval.eval_every": 0,
            "eval.probe": False,
            "system.precision": "fp32",
            **({"method.bn_splits": 1} if method == "moco_v2" else {}),  # one BN group: sync BN
            **({"method.proj_hidden": 64, "method.pred_hidden": 64} if method == "moco_v3" else {}),
        },
    )


def _trials(rank: int, cache) -> dict:
    out = {}
    for method in DATA_PARALLEL:
        reports = []
        run_trial(_flat(method, cache), reports.append)
        out[method] = [r["loss"] for r in reports]
        out[f"{method}_final"] = reports[-1].get("knn_acc")
    return out


def test_distributed__two_ranks_train_as_one_process(tmp_path):
    ranks = _spawn(_trials, tmp_path, tmp_path / "cache")
    torch.set_num_threads(1)
    for method in DATA_PARALLEL:
        reports = []
        run_trial(_flat(method, tmp_path / "cache"), reports.append)
        single = [r["loss"] for r in reports]
        assert ranks[0][method] == pytest.approx(single, abs=1e-5), method
        assert ranks[1][method] == ranks[0][method]  # every rank reports the mean over ranks
        assert ranks[0][f"{method}_final"] == pytest.approx(reports[-1]["knn_acc"], abs=1e-3)
        assert ranks[1][f"{method}_final"] is None  # rank 0 alone evaluates


def test_distributed__checkpoints_move_between_one_and_two_ranks(tmp_path):
    cfg = TrialConfig.from_flat(_flat("byol", tmp_path)).resolved()
    one, two = build_model(cfg, 10, torch.device("cpu")), build_model(cfg, 10, torch.device("cpu"), ranks=2)
    assert any(isinstance(m, SyncBatchNorm) for m in two.modules())
    assert not any(isinstance(m, SyncBatchNorm) for m in one.modules())
    two.load_state_dict(one.state_dict())  # same keys and shapes: strict loading passes both ways
    one.load_state_dict(two.state_dict())
    frozen = [p.requires_grad for n, p in two.named_parameters() if n.startswith("target_")]
    assert frozen and not any(frozen)  # the EMA target's BN stays without gradient


def test_distributed__moco_keeps_its_bn_groups_over_the_ranks():
    moco = method_class("moco_v2")
    assert moco.for_ranks(moco.Params(bn_splits=8), 2).bn_splits == 4
    assert moco.for_ranks(moco.Params(bn_splits=1), 4).bn_splits == 1
    with pytest.raises(ValueError, match=r"method\.bn_splits 6 cannot be shared by 4 workers"):
        moco.for_ranks(moco.Params(bn_splits=6), 4)
    with pytest.raises(ValueError, match="method 'simclr' cannot train data-parallel"):
        method_class("simclr").for_ranks(method_class("simclr").Params(), 2)


def test_distributed__shard_is_a_contiguous_slice():
    x = torch.arange(12)
    assert shard(x, Ranks(1, 3)).tolist() == [4, 5, 6, 7]
    assert shard(x, Ranks()) is x
    with pytest.raises(ValueError, match="batch 12 is not divisible by 5 ranks"):
        shard(x, Ranks(0, 5))
