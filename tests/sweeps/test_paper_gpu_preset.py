"""The gpu preset against the study's scripts: each method's resolved trial vs a transcribed table.

``STUDY`` is transcribed from HaoranTang/cl_spatial_inductive_bias at ed93cd2 (the script named
per method; ``base.py``/``base_old.py``/``args/utils.py``/``args/dataset.py`` are the study's
``solo/methods`` and ``solo/args`` files) and, for the files the study's repository lacks, from
vturrisi/solo-learn (``[solo]``). "ours" is read off what the launcher actually builds from the
preset: the resolved flat trial config, the model, the optimizer and the training pipeline. A key
whose values differ must be listed under ``deviations:`` in the YAML with both values; an entry
there that names a table key must match a real difference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from sweeps import paper_table1
from sweeps.launch import prepare
from sweeps.options import CONFIG_DIR
from trainables.backbone import SplitBatchNorm2d
from trainables.build import build_data, build_model, build_optim
from trainables.config import TrialConfig
from trainables.data.augment import view_recipes

GPU_YAML = CONFIG_DIR / "paper_table1_gpu.yaml"

# One augmentation pipeline of the study ([STUDY] solo/args/dataset.py defaults + the script's flags;
# CifarTransform applies them in this order: crop, jitter, grayscale, blur, solarize, flip).
_VIEW = {
    "crop_scale": (0.08, 1.0),  # --min_scale default 0.08, --max_scale default 1.0
    "crop_ratio": (3 / 4, 4 / 3),  # RandomResizedCrop's default ratio
    "size": 32,  # --crop_size 32
    "brightness": 0.4,  # --brightness 0.4
    "contrast": 0.4,  # --contrast 0.4
    "saturation": 0.4,  # --saturation 0.4 (sup.sh, cifar_mocov2.sh, run_supcon_res_cifar10.sh)
    "hue": 0.1,  # --hue 0.1
    "jitter_p": 0.8,  # --color_jitter_prob default 0.8
    "gray_p": 0.2,  # --gray_scale_prob default 0.2
    "flip_p": 0.5,  # --horizontal_flip_prob default 0.5
    "blur_p": 0.0,  # --gaussian_prob 0.0 (0.0 0.0 with two crops)
    "solarize_p": 0.0,  # --solarization_prob default 0.0
}
# byol.sh, barlow.sh, dino.sh: --saturation 0.2, --solarization_prob 0.0 0.2 with --num_crops_per_aug 1 1
_ASYMMETRIC = [{**_VIEW, "saturation": 0.2, "solarize_p": 0.0}, {**_VIEW, "saturation": 0.2, "solarize_p": 0.2}]

_STEM = "conv3x3 s1 p2, no max-pool"  # base.py/base_old.py: nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False); maxpool = nn.Identity()
_BACKBONE = {
    "backbone": "resnet18",
    "stem": _STEM,
    "zero_init_residual": False,
}  # --backbone resnet18; --zero_init_residual not passed
_SCHEDULE = {
    "warmup_epochs": 10
}  # --warmup_epochs default 10 (warmup_cosine from 3e-5 to the base lr, then to min_lr 0)
# LARSWrapper(eta=0.02, clip=True, exclude_bias_n_norm=True) around SGD(momentum 0.9): --lars --grad_clip_lars
# --eta_lars 0.02 --exclude_bias_n_norm --optimizer sgd (base_old.py configure_optimizers; args/utils.py momentum 0.9)
_LARS = {"optimizer": "lars", "momentum": 0.9, "lars_eta": 0.02, "lars_clip": True, "exclude_bias_norm": True}
# plain SGD (args/utils.py: momentum 0.9); base.py never reads --exclude_bias_n_norm, base_old.py only under --lars
_SGD = {"optimizer": "sgd", "momentum": 0.9, "lars_eta": None, "lars_clip": None, "exclude_bias_norm": False}

STUDY: dict[str, dict[str, Any]] = {
    "supervised": {  # script/sup.sh; solo/methods/sup.py (base_old.py)
        **_BACKBONE,
        **_SCHEDULE,
        **_SGD,
        "backbone": "resnet50",  # --backbone resnet50
        "lr": 3.6,  # --lr 0.4, x batch_size * len(gpus) / 256 = 9 (args/utils.py; --gpus 0,1,2,3,4,5,6,7,8)
        "weight_decay": 1e-5,  # --weight_decay 1e-5
        "batch_size": 2304,  # --batch_size 256 per GPU x 9 GPUs
        "epochs": 200,  # --max_epochs 200
        "classifier": "Linear(512,10)",  # sup.py: the classifier is the model's head (backbone_detach False)
        "views": [_VIEW],  # --num_crops_per_aug 1: one crop, --saturation 0.4
    },
    "supcon": {  # run_supcon_res_cifar10.sh; [solo] solo/methods/supcon.py, solo/losses/simclr.py
        **_BACKBONE,
        **_SCHEDULE,
        **_LARS,
        # --optimizer lars --grad_clip_lars --eta_lars 0.02 --exclude_bias_n_norm (base.py's LARS class).
        # INFERRED, see the YAML's "LARS arguments": the code may not pass these flags (nor momentum) on.
        "lr": 0.4,  # --lr 0.4 (x 256 * 1 / 256)
        "weight_decay": 1e-4,  # --weight_decay 1e-4
        "batch_size": 256,  # --batch_size 256, --gpus 0
        "epochs": 400,  # --max_epochs 400
        "projector": "Linear(512,2048)-ReLU-Linear(2048,256)",  # --proj_hidden_dim 2048 --proj_output_dim 256; supcon.py: no BN
        "temperature": 0.2,  # --temperature 0.2
        "loss_form": "in",  # simclr_loss_func(z, indexes=targets): -mean log(sum pos / (sum pos + sum neg))
        "views": [_VIEW, _VIEW],  # --num_crops_per_aug 1 1, --saturation 0.4, no solarization flag
    },
    "moco_v2": {  # script/cifar_mocov2.sh; solo/methods/mocov2plus.py (base.py)
        **_BACKBONE,
        **_SCHEDULE,
        **_SGD,
        "lr": 0.3,  # --lr 0.3
        "weight_decay": 1e-4,  # --weight_decay 1e-4
        "batch_size": 256,  # --batch_size 256, --gpus 0
        "epochs": 200,  # --max_epochs 200
        "projector": "Linear(512,2048)-ReLU-Linear(2048,128)",  # --proj_hidden_dim 2048; proj_output_dim default 128; no BN
        "temperature": 0.2,  # --temperature 0.2
        "queue_size": 32768,  # --queue_size 32768
        "queue_init": "random",  # mocov2plus.py: torch.randn(2, proj_output_dim, queue_size), normalised
        "symmetric": True,  # mocov2plus.py: (loss(q1, k2, queue[1]) + loss(q2, k1, queue[0])) / 2
        "batchnorm": "plain",  # one GPU, no shuffle BN or split BN in mocov2plus.py
        "ema_momentum": (0.99, 0.999),  # --base_tau_momentum 0.99 --final_tau_momentum 0.999 (cosine, per step)
        "views": [_VIEW, _VIEW],  # --num_crops_per_aug 1 1, --gaussian_prob 0.0 0.0
    },
    "byol": {  # script/byol.sh; [solo] solo/methods/byol.py (base_old.py, INFERRED from --lars)
        **_BACKBONE,
        **_SCHEDULE,
        **_LARS,
        "lr": 1.0,  # --lr 1.0
        "weight_decay": 1e-5,  # --weight_decay 1e-5
        "batch_size": 256,  # --batch_size 256
        "epochs": 200,  # --max_epochs 200
        "projector": "Linear(512,4096)-BN-ReLU-Linear(4096,256)",  # --proj_hidden_dim 4096 --proj_output_dim 256
        "predictor": "Linear(256,4096)-BN-ReLU-Linear(4096,256)",  # --pred_hidden_dim 4096
        "ema_momentum": (0.99, 1.0),  # --base_tau_momentum 0.99 --final_tau_momentum 1.0
        "views": _ASYMMETRIC,  # --saturation 0.2 --solarization_prob 0.0 0.2
    },
    "barlow_twins": {  # script/barlow.sh; [solo] solo/methods/barlow_twins.py, solo/losses/barlow.py
        **_BACKBONE,
        **_SCHEDULE,
        **_LARS,
        "lr": 0.3,  # --lr 0.3
        "weight_decay": 1e-4,  # --weight_decay 1e-4
        "batch_size": 256,  # --batch_size 256
        "epochs": 200,  # --max_epochs 200
        # --proj_hidden_dim 2048 --proj_output_dim 2048; barlow_twins.py: 3 Linears, BN + ReLU after the hidden two
        "projector": "Linear(512,2048)-BN-ReLU-Linear(2048,2048)-BN-ReLU-Linear(2048,2048)",
        "lambd": 0.0051,  # --lamb default 0.0051
        "scale_loss": 0.1,  # --scale_loss 0.1
        "views": _ASYMMETRIC,  # --saturation 0.2 --solarization_prob 0.0 0.2
    },
    "dino": {  # script/dino.sh; [solo] solo/methods/dino.py (argparse era), solo/losses/dino.py
        **_BACKBONE,
        **_SCHEDULE,
        **_LARS,
        "lr": 0.3,  # --lr 0.3
        "weight_decay": 1e-6,  # --weight_decay 1e-6
        "batch_size": 256,  # --batch_size 256
        "epochs": 200,  # --max_epochs 200
        # --proj_hidden_dim 2048 --proj_output_dim 256; num_layers 3, --use_bn_in_head default False; GELU
        "head": "Linear(512,2048)-GELU-Linear(2048,2048)-GELU-Linear(2048,256)",
        "prototypes": "WeightNorm-Linear(256,4096,bias=False)",  # --num_prototypes 4096; nn.utils.weight_norm
        "norm_last_layer": True,  # --norm_last_layer default True: weight_g fixed at 1, requires_grad False
        "freeze_last_layer_epochs": 1,  # --freeze_last_layer default 1 (on_after_backward: grads None)
        "student_temperature": 0.1,  # --student_temperature default 0.1
        "teacher_temperature": 0.07,  # --teacher_temperature default 0.07
        "warmup_teacher_temperature": 0.04,  # --warmup_teacher_temperature default 0.04
        "warmup_teacher_epochs": 50,  # --warmup_teacher_temperature_epochs default 50
        "center_momentum": 0.9,  # DINOLoss center_momentum default 0.9
        "ema_momentum": (0.9995, 1.0),  # --base_tau_momentum 0.9995 --final_tau_momentum 1.0
        "views": _ASYMMETRIC,  # --saturation 0.2 --solarization_prob 0.0 0.2
    },
}


def _arch(layers: nn.Module) -> str:
    """``Linear(512,2048)-BN-ReLU-...`` of a Sequential."""
    names = {nn.BatchNorm1d: "BN", nn.ReLU: "ReLU", nn.GELU: "GELU"}
    return "-".join(
        f"Linear({m.in_features},{m.out_features})" if isinstance(m, nn.Linear) else names[type(m)] for m in layers
    )


def _stem(backbone: nn.Module) -> str:
    conv = backbone.conv1
    pool = "no max-pool" if isinstance(backbone.maxpool, nn.Identity) else "max-pool"
    return f"conv{conv.kernel_size[0]}x{conv.kernel_size[1]} s{conv.stride[0]} p{conv.padding[0]}, {pool}"


def _optimizer(opt: torch.optim.Optimizer) -> dict[str, Any]:
    main = opt.param_groups[0]
    flat_groups = [g for g in opt.param_groups if any(p.ndim <= 1 for p in g["params"])]
    return {
        "optimizer": type(opt).__name__.lower(),
        "lr": main["lr"],
        "weight_decay": main["weight_decay"],
        "momentum": main["momentum"],
        "lars_eta": main.get("eta"),
        "lars_clip": main.get("clip"),
        "exclude_bias_norm": all(g["weight_decay"] == 0 and not g.get("lars", False) for g in flat_groups),
    }


def _views(pipeline, image_size: int) -> list[dict[str, Any]]:
    return [
        {k: getattr(r, k) if k != "size" else r.size or image_size for k in _VIEW}
        for r in view_recipes(pipeline.augment, pipeline.n_views)
    ]


def _heads(method: nn.Module, p: Any, epochs: int) -> dict[str, Any]:
    """The method-specific rows, read off the built method and its Params."""
    name = method.name
    if name == "supervised":
        return {"classifier": _arch([method.classifier])}
    if name == "supcon":
        return {"projector": _arch(method.projector), "temperature": p.temperature, "loss_form": p.loss_form}
    if name == "moco_v2":
        splits = {m.num_splits for m in method.backbone.modules() if isinstance(m, SplitBatchNorm2d)} - {1}
        return {
            "projector": _arch(method.projector),
            "temperature": p.temperature,
            "queue_size": method.queue.shape[1],
            "queue_init": "random" if int(method.queue_filled) == method.queue.shape[1] else "grow",
            "symmetric": p.symmetric,
            "batchnorm": f"split {splits}" if splits else "plain",
            "ema_momentum": (p.momentum_base, p.momentum_final),
        }
    if name == "byol":
        return {
            "projector": _arch(method.projector),
            "predictor": _arch(method.predictor),
            "ema_momentum": (p.momentum_base, p.momentum_final),
        }
    if name == "barlow_twins":
        return {"projector": _arch(method.projector), "lambd": p.lambd, "scale_loss": p.scale_loss}
    if name == "dino":
        protos = method.head.prototypes
        weight_norm = type(protos.parametrizations.weight[0]).__name__ == "_WeightNorm"
        return {
            "head": _arch(method.head.mlp),
            "prototypes": f"{'WeightNorm-' if weight_norm else ''}Linear({protos.in_features},{protos.out_features},"
            f"bias={protos.bias is not None})",
            "norm_last_layer": not protos.parametrizations.weight.original0.requires_grad,
            "freeze_last_layer_epochs": p.freeze_last_layer_fraction * epochs,
            "student_temperature": p.student_temperature,
            "teacher_temperature": p.teacher_temperature,
            "warmup_teacher_temperature": p.warmup_teacher_temperature,
            "warmup_teacher_epochs": p.warmup_teacher_fraction * epochs,
            "center_momentum": p.center_momentum,
            "ema_momentum": (p.momentum_base, p.momentum_final),
        }
    raise AssertionError(f"no table rows for method {name!r}")


def ours(cell: dict[str, Any], data) -> dict[str, Any]:
    """What the launcher's trial config builds, in the table's terms."""
    cfg = TrialConfig.from_flat(cell).resolved()
    cpu = torch.device("cpu")
    method = build_model(cfg, data.num_classes, cpu)
    pipeline = build_data(cfg, data, cpu).pipeline
    return {
        "backbone": cfg.model.backbone,
        "stem": _stem(method.backbone),
        "zero_init_residual": cfg.model.zero_init_last,
        **_optimizer(build_optim(cfg, method)),
        "batch_size": cfg.optim.batch_size,
        "epochs": cfg.optim.epochs,
        "warmup_epochs": cfg.optim.warmup_fraction * cfg.optim.epochs,
        "views": _views(pipeline, data.image_size[0]),
        **_heads(method, cfg.params, cfg.optim.epochs),
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """``views`` spelled out as ``n_views`` and ``views[i].<option>`` rows, one message per option."""
    out = {k: v for k, v in row.items() if k != "views"}
    out["n_views"] = len(row["views"])
    out.update({f"views[{i}].{k}": v for i, view in enumerate(row["views"]) for k, v in view.items()})
    return out


def _listed(deviations: list[dict], method: str, key: str) -> dict | None:
    """The entry for ``key`` that covers ``method`` (no ``methods``: every method)."""
    return next((d for d in deviations if d["key"] == key and method in (d.get("methods") or [method])), None)


def unlisted_differences(resolved: dict[str, dict], deviations: list[dict], study: dict = STUDY) -> list[str]:
    """``method.key: ours X, study Y`` for every table row of the ``resolved`` methods that differs
    without a matching ``deviations`` entry, or is listed there without differing or with other values."""
    out = []
    for method, row in resolved.items():
        got_row, want_row = _flat(row), _flat(study[method])
        for key, want in want_row.items():
            got, entry = got_row.get(key, "(missing)"), _listed(deviations, method, key)
            if entry is None and not _same(got, want):
                out.append(f"{method}.{key}: ours {got!r}, study {want!r} (not listed under deviations:)")
            elif entry is not None and _same(got, want):
                out.append(f"{method}.{key}: listed under deviations: but ours and the study's agree ({got!r})")
            elif entry is not None and not (_same(entry["ours"], got) and _same(entry["study"], want)):
                out.append(
                    f"{method}.{key}: deviations: says ours {entry['ours']!r}, study {entry['study']!r}; "
                    f"the values are ours {got!r}, study {want!r}"
                )
    return out


def _plan(tmp_path: Path, config: Path):
    return prepare(
        paper_table1.SWEEP,
        ["--config", str(config), "--dataset", "digits", "--storage-path", str(tmp_path / "runs"), "--dry-run"],
    )[0]


def _first_cells(plan) -> dict[str, dict]:
    """Each method's first trained cell (every corruption and seed share the method's settings)."""
    first: dict[str, dict] = {}
    for cell in plan.cells:
        if cell["optim.epochs"] > 0 and cell.get("data.labels_per_class") is None:
            first.setdefault(cell["method"], cell)
    return first


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    """(plan, {method: ours}) of the gpu preset, resolved once for the module."""
    tmp = tmp_path_factory.mktemp("gpu_preset")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBL_CACHE_DIR", str(tmp / "cache"))
        plan = _plan(tmp, GPU_YAML)
        return plan, {m: ours(c, plan.data) for m, c in _first_cells(plan).items()}


def test_gpu_preset__every_method_is_in_the_table(gpu):
    plan, resolved = gpu
    assert sorted(resolved) == sorted(STUDY) == sorted(plan.opts["methods"])
    for method, row in resolved.items():
        assert row.keys() == STUDY[method].keys(), method


@pytest.mark.parametrize("method", sorted(STUDY))
def test_gpu_preset__reproduces_the_studys_scripts_up_to_listed_deviations(gpu, method):
    plan, resolved = gpu
    problems = [p for p in unlisted_differences(resolved, plan.opts["deviations"]) if p.startswith(method + ".")]
    assert not problems, "\n".join(problems)


def test_gpu_preset__every_cell_of_a_method_has_its_settings(gpu):
    plan, _ = gpu
    varying = {"data.corruption", "system.seed", "optim.epochs"}  # the grid's axes and the untrained reference
    first = _first_cells(plan)
    for cell in plan.cells:
        if cell["optim.epochs"] > 0:
            same = {k: v for k, v in cell.items() if k not in varying}
            assert same == {k: v for k, v in first[cell["method"]].items() if k not in varying}, cell["method"]


def test_gpu_preset__a_changed_value_fails_the_comparison(tmp_path, monkeypatch):
    """The comparison can fail: MoCo-v2 at T 0.3 instead of the study's 0.2 is an unlisted difference."""
    monkeypatch.setenv("SBL_CACHE_DIR", str(tmp_path / "cache"))
    preset = yaml.safe_load(GPU_YAML.read_text())
    preset.update(methods=["moco_v2"], corruptions=["ori"], seeds=[0], include_untrained=False)
    preset["method_params"]["moco_v2"]["temperature"] = 0.3
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(preset))
    plan = _plan(tmp_path, config)
    resolved = {"moco_v2": ours(_first_cells(plan)["moco_v2"], plan.data)}
    problems = unlisted_differences(resolved, plan.opts["deviations"])
    assert problems == ["moco_v2.temperature: ours 0.3, study 0.2 (not listed under deviations:)"]


def test_gpu_check_preset__keeps_the_gpu_presets_trial_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SBL_CACHE_DIR", str(tmp_path / "cache"))
    check = _plan(tmp_path, CONFIG_DIR / "paper_table1_gpu_check.yaml")
    gpu_cells = {
        (c["method"], c["data.corruption"], c["system.seed"]): c
        for c in _plan(tmp_path, GPU_YAML).cells
        if c["optim.epochs"] > 0
    }
    cadence = {"eval.eval_every", "eval.knn_at_init", "system.checkpoint_every"}
    for cell in check.cells:
        twin = gpu_cells[(cell["method"], cell["data.corruption"], cell["system.seed"])]
        assert {k: v for k, v in cell.items() if k not in cadence} == {
            k: v for k, v in twin.items() if k not in cadence
        }
