"""Data parallelism without Ray: two gloo processes (torch.multiprocessing) against one process.

The trial comparison runs every registered method with ``data_parallel`` (``DATA_PARALLEL``) for
two steps of batch 32 (16 px, 1/16-width ResNet-18), split 16 + 16 over the ranks. Tolerances:
the first step sees the same weights and the same global batch, so its loss agrees to float
rounding; the second step's loss and the final weights add the drift of float reduction order (a
shard's convolution, the all-reduce), which training amplifies, as a single process at 1 and at
2 threads drifts. Measured over the methods: losses within 1.2e-6 of one process, weights within
1.1e-5 (Barlow Twins; one process at 2 threads: 1.1e-5 too), so 1e-5 and 1e-4. A method that
leaves out what couples its batch across ranks is far outside: with the gather or the average
removed, SimCLR, SupCon and Barlow Twins miss by 8e-3 to 0.7 in the first loss, and DINO (its
centre's teacher mean per rank) by 2.9e-5 in the second loss and 2.9e-3 in the weights. A third
step would let Barlow Twins' LARS steps amplify the rounding to 4e-5 (loss) and 6e-4 (weights),
in one process at another thread count as well.
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
from trainables.distributed import Ranks, SyncBatchNorm, agreed_memory_format, agreed_precision, shard
from trainables.loop import run_trial
from trainables.memory_format import CHANNELS_LAST, CONTIGUOUS
from trainables.methods import METHODS, Method, method_class, register_method
from trainables.methods.base import NoParams

RANKS = 2
# Every registered method that trains data-parallel, so a new one is compared without being listed.
DATA_PARALLEL = sorted(name for name, cls in METHODS.items() if cls.data_parallel)
LOSS_ATOL, WEIGHTS_ATOL = 1e-5, 1e-4  # the module docstring


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
    # 40 images of 16 px, batch 32: one step per epoch, so each epoch's loss is one step's; fp32
    # (bf16 rounds differently at another batch size); tolerances in the module docstring.
    return tiny_flat(
        method,
        cache,
        **{
            "data.train_per_class": 4,
            "data.image_size": 16,
            "model.width": 0.0625,
            "optim.epochs": 2,
            "eval.eval_every": 0,
            "eval.probe": False,
            "system.precision": "fp32",
            **({"method.bn_splits": 1} if method == "moco_v2" else {}),  # one BN group: sync BN
            **({"method.proj_hidden": 64, "method.pred_hidden": 64} if method == "moco_v3" else {}),
        },
    )


def _run(method: str, cache) -> dict:
    """One trial (on every rank of a group): its per-step losses, final kNN accuracy and weights."""
    reports, saved = [], []
    run_trial(_flat(method, cache), reports.append, save=saved.append)
    state = saved[-1]["method"] if saved else {}  # rank 0 saves
    weights = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()} or None
    return {"loss": [r["loss"] for r in reports], "knn_acc": reports[-1].get("knn_acc"), "weights": weights}


def _trials(rank: int, cache) -> dict:
    return {method: _run(method, cache) for method in DATA_PARALLEL}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Every data-parallel method's trial on 2 ranks, in one process group (one start-up for all)."""
    tmp_path = tmp_path_factory.mktemp("ranks")
    return _spawn(_trials, tmp_path, tmp_path / "cache")


@pytest.mark.parametrize("method", DATA_PARALLEL)
def test_distributed__two_ranks_train_as_one_process(two_ranks, method, tmp_path):
    torch.set_num_threads(1)
    single = _run(method, tmp_path / "cache")
    ranked = two_ranks[0][method]
    assert ranked["loss"] == pytest.approx(single["loss"], abs=LOSS_ATOL)
    assert two_ranks[1][method]["loss"] == ranked["loss"]  # every rank reports the mean over ranks
    assert ranked["knn_acc"] == pytest.approx(single["knn_acc"], abs=1e-3)
    assert two_ranks[1][method]["knn_acc"] is None and two_ranks[1][method]["weights"] is None  # rank 0 alone
    assert ranked["weights"].keys() == single["weights"].keys()
    for key, value in single["weights"].items():
        torch.testing.assert_close(ranked["weights"][key], value, rtol=0, atol=WEIGHTS_ATOL, msg=key)


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


def test_distributed__a_method_without_data_parallel_is_refused_listing_those_with():
    @register_method
    class OneProcess(Method):  # the default: data_parallel False
        name = "one_process"

    try:
        message = rf"method 'one_process' cannot train data-parallel \(2 workers per trial\).*valid methods: {', '.join(DATA_PARALLEL)}, or"
        with pytest.raises(ValueError, match=message):
            OneProcess.for_ranks(NoParams(), 2)
    finally:
        METHODS.pop(OneProcess.name)


def test_distributed__shard_is_a_contiguous_slice():
    x = torch.arange(12)
    assert shard(x, Ranks(1, 3)).tolist() == [4, 5, 6, 7]
    assert shard(x, Ranks()) is x
    with pytest.raises(ValueError, match="batch 12 is not divisible by 5 ranks"):
        shard(x, Ranks(0, 5))


def _one_rank_says_no(rank: int, cache) -> dict:
    """Two trials on each rank of a group; in each, rank 1's own check refuses one fast path (bf16,
    then channels_last) that rank 0's passes. Returns what each trial trained in and reported."""
    from trainables import loop, memory_format

    flat = {
        **_flat("supervised", cache),
        "model.width": 0.25,  # no 1x1 convolution below a CPU's channel block: channels_last can run
        "optim.epochs": 1,
        "system.precision": "auto",
        "system.channels_last": True,
    }
    memory_format.suspect_convs = lambda shape: []
    built, results = [], {}
    build_step = loop.build_step
    loop.build_step = lambda cfg, *a: built.append(cfg.system) or build_step(cfg, *a)
    for refused in ("bf16", "channels_last"):
        # A fake of each rank's own checks: rank 0's machine passes both, rank 1's refuses ``refused``.
        passes = {"bf16": rank == 0 or refused != "bf16", "channels_last": rank == 0 or refused != "channels_last"}
        loop.resolve_precision = lambda name, device, p=passes: "bf16" if p["bf16"] else "fp32"
        memory_format.canary = lambda shape, p=passes: {
            "ok": p["channels_last"],
            "reason": f"fake canary of rank {rank}",
        }
        reports = []
        run_trial(flat, reports.append)
        results[refused] = {"trained": built[-1], "report": reports[-1]}
    return results


def test_distributed__a_fast_path_one_rank_refuses_is_refused_by_all(tmp_path):
    """Finding 8 of the numerics review: each rank decides precision and memory format on its own
    machine; the ranks then agree on the safe choice, and what the trial records is what ran."""
    results = _spawn(_one_rank_says_no, tmp_path, tmp_path / "cache")
    for rank, res in enumerate(results):
        trained = res["bf16"]["trained"]
        assert trained.precision == "fp32" and trained.channels_last, (rank, trained)
        trained = res["channels_last"]["trained"]
        assert trained.precision == "bf16" and not trained.channels_last, (rank, trained)
        assert res["channels_last"]["report"]["memory_format"] == CONTIGUOUS
    # Rank 0 records the trial's choice, and why: rank 1 refused.
    assert results[0]["bf16"]["report"]["precision"] == "fp32"
    assert results[0]["channels_last"]["report"]["precision"] == "bf16"
    assert "rank(s) 1 refused channels_last" in results[0]["channels_last"]["report"]["memory_format_reason"]
    assert results[1]["channels_last"]["report"]["memory_format_reason"] == "fake canary of rank 1"  # its own


def test_distributed__one_process_keeps_its_own_choice():
    memory = {"memory_format": CHANNELS_LAST, "memory_format_reason": "canary passed"}
    assert agreed_memory_format(memory, Ranks()) is memory  # no process group: no collective
    assert agreed_precision("bf16", Ranks()) == "bf16"
    assert agreed_precision("fp32", Ranks()) == "fp32"
