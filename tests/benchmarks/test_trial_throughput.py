"""trial_throughput.py: which trials share a training step, and the per-epoch speeds it reads."""

from __future__ import annotations

import json

import torch

from benchmarks.trial_throughput import epoch_speeds, flat_config, step_key
from trainables.build import resolve_precision


def _trial(**overrides) -> dict:
    base = {
        "method": "moco_v2",
        "optim.batch_size": 64,
        "system.precision": "auto",
        "system.channels_last": True,
        "model.width": 0.25,
        "method.queue_size": 1024,
        "data.corruption": "ori",
        "system.seed": 0,
        "optim.lr": 0.3,
    }
    return {**base, **overrides}


def test_step_key__same_model_shares_a_step_whatever_the_data_seed_or_lr():
    a = step_key(_trial())
    assert a == step_key(_trial(**{"data.corruption": "glo_4", "system.seed": 1, "optim.lr": 0.1}))
    assert ("model.width", 0.25) in a[3] and ("optim.lr", 0.3) not in a[3]
    auto = {"bf16": "channels_last+bf16", "fp32": "channels_last"}[resolve_precision("auto", torch.device("cpu"))]
    assert a[2] == auto  # auto resolves as the trial's did on this CPU
    assert step_key(_trial(**{"system.precision": "bf16"}))[2] == "channels_last+bf16"
    assert a != step_key(_trial(**{"optim.batch_size": 128}))
    assert a != step_key(_trial(**{"method.queue_size": 4096}))
    assert step_key(_trial(**{"system.precision": "fp32"}))[2] == "channels_last"
    assert step_key(_trial(**{"system.precision": "fp32", "system.channels_last": False}))[2] == "fp32"


def test_epoch_speeds_and_config__read_from_result_json_with_types_kept(tmp_path):
    config = {"sweep.cell": {"method": "moco_v2", "method.proj_hidden": 512, "optim.lr": 0.1}, "optim.lr": 0.2}
    lines = [
        {"epoch": 1, "samples_per_s": 100.0},
        {"epoch": 2, "samples_per_s": 120.0, "knn_acc": 40.0},
        {"done": True, "config": config},
    ]
    (tmp_path / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert epoch_speeds(str(tmp_path)) == [100.0, 120.0]
    flat = flat_config(str(tmp_path))
    assert flat["method.proj_hidden"] == 512 and isinstance(flat["method.proj_hidden"], int) and flat["optim.lr"] == 0.2
