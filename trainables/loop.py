"""``run_trial(cfg, report) -> dict``: one trial end to end, plain Python, no Ray.

Ray (``trainables.tune_adapter``) only wraps this function. ``report`` receives one dict of
scalar metrics per epoch; ``save`` (optional) receives the full resumable state every
``checkpoint_every`` epochs; ``resume`` restarts from such a state and ends bit for bit where
an uninterrupted run ends (on CPU).

Data-parallel: called in every process of a ``torch.distributed`` group (Ray Train starts them,
``trainables.ray_train_adapter``), the same function trains one model over the ranks
(``trainables.distributed``: each rank a shard of every global batch, gradients averaged); rank 0
alone evaluates and hands states to ``save``; every rank calls ``report`` once per epoch (rank 0's
metrics are the trial's). Without a process group nothing of this runs.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from trainables import distributed
from trainables.backbone import plain_batchnorm
from trainables.build import (
    autocast,
    build_data,
    build_model,
    build_optim,
    check_batch_fits,
    eval_prepare,
    load_data,
    pick_device,
    resolve_precision,
    scaled_lr,
    subset,
)
from trainables.config import TrialConfig
from trainables.data.augment import view_augmentation, view_recipes
from trainables.data.batches import Pipeline, take, train_batches
from trainables.data.datasets import ImageDataset
from trainables.evaluation.finetune import finetune
from trainables.evaluation.protocol import (
    embed_padded,
    epoch_metrics,
    extract_features,
    final_metrics,
    reference_fp32,
)
from trainables.memory_format import CHANNELS_LAST
from trainables.memory_format import choose as choose_memory_format
from trainables.optim import lr_at
from trainables.seeding import derive_seed, generators
from trainables.step import Step, build_step

Report = Callable[[dict[str, Any]], None]
EVAL_PRECISION = "ieee-fp32"  # of the final metrics (reference_fp32); trials recorded before it have none


def run_trial(
    cfg: TrialConfig | dict,
    report: Report = print,
    *,
    resume: dict | None = None,
    save: Callable[[dict], None] | None = None,
    dataset: ImageDataset | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration.

    Args:
        cfg: a TrialConfig or its flat dict.
        report: called once per epoch with scalar metrics (``epoch``, ``loss``, ``lr``,
            ``samples_per_s``, and on evaluation epochs ``knn_acc``, ``uniformity``, plus
            ``knn_acc_init`` and ``knn_gain`` with ``eval.knn_at_init``, and ``memory_format`` with its
            ``memory_format_reason``: see ``trainables.memory_format``); the last call also
            carries the final metrics (lists included; ``finetune_acc`` with ``eval.finetune``)
            and ``done=True``.
        resume: a state previously given to ``save``.
        save: receives the resumable state (a dict of tensors and numbers, ``torch.save``-able).
        dataset: an already loaded dataset (Ray passes one shared copy); else loaded from cfg.

    Returns:
        Final metrics: knn_acc, uniformity, probe_acc, ece, alignment (scalars),
        classwise_uniformity (C,), feature_distance (C x C), plus timing.
    """
    cfg = (TrialConfig.from_flat(cfg) if isinstance(cfg, dict) else cfg).resolved()
    where = distributed.ranks()
    distributed.check_config(cfg, where.size)
    device = pick_device(cfg.system.device)
    data = subset(dataset, cfg.data) if dataset is not None else load_data(cfg.data)
    check_batch_fits(cfg, data)  # the sweep checked it too, before any trial started
    td = build_data(cfg, data, device)
    # Each rank checks its own machine; data-parallel ranks then all take the safe choice if one says no.
    cfg = cfg.replace({"system.precision": distributed.agreed_precision(_precision(cfg, device, resume), where)})
    # channels_last only where its gradients are right, checked on this rank's own step
    memory = choose_memory_format(cfg, device, data.image_size, where.size)
    memory = distributed.agreed_memory_format(memory, where)
    cfg = cfg.replace({"system.channels_last": memory["memory_format"] == CHANNELS_LAST})
    method = build_model(cfg, td.num_classes, device, ranks=where.size)
    optimizer = build_optim(cfg, method)
    gens = generators(cfg.system.seed)
    steps_per_epoch = len(td.train) // cfg.optim.batch_size
    total = steps_per_epoch * cfg.optim.epochs
    start_epoch, step, history = 0, 0, []
    precision = autocast(cfg, device)
    init: dict[str, float] = {}
    if resume is not None:
        start_epoch, step, history = _restore(resume, method, optimizer, gens)
        init = dict(resume.get("init", {}))
    elif cfg.eval.knn_at_init and where.main:
        # The same network the untrained reference (optim.epochs 0, same seed) evaluates, in the
        # final metrics' fp32 (precision None), so that knn_gain compares like with like.
        init = {"knn_acc_init": _evaluate(cfg, method, td, device, None, 0, final=False)["knn_acc"]}
    # Built once: a compiled or captured step lives as long as the trial.
    step_fn = build_step(cfg, method, optimizer, device, distributed.wrap(method, device) if where.size > 1 else None)
    started = time.perf_counter()
    # The last epoch's metrics: a launch that resumes after the last epoch trains none, and its final
    # report still carries that epoch's loss (the driver may have stopped before it recorded them).
    metrics: dict[str, Any] = dict(history[-1]) if history else {}
    for epoch in range(start_epoch, cfg.optim.epochs):
        tic = time.perf_counter()
        means, step = _train_epoch(cfg, method, step_fn, td, gens, device, step, total, epoch, where)
        means = distributed.mean_over_ranks(means, where)
        seconds = time.perf_counter() - tic
        # The epoch means of training_step's scalars: loss, and e.g. train_acc (trainables.metrics).
        metrics = {
            "epoch": epoch + 1,
            **means,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "samples_per_s": steps_per_epoch * cfg.optim.batch_size / seconds,
            "epoch_time_s": seconds,
            **memory,
        }
        evaluates = cfg.eval.eval_every and (epoch + 1) % cfg.eval.eval_every == 0 and epoch + 1 < cfg.optim.epochs
        if evaluates and where.main:
            metrics.update(_with_gain(_evaluate(cfg, method, td, device, precision, epoch + 1, final=False), init))
        history.append(metrics)
        checkpoints = (epoch + 1) % cfg.system.checkpoint_every == 0 or epoch + 1 == cfg.optim.epochs
        if save is not None and checkpoints and where.main:
            save(
                {
                    **_state(epoch + 1, step, history, method, optimizer, gens),
                    "init": init,
                    "precision": cfg.system.precision,
                }
            )
        if epoch + 1 < cfg.optim.epochs:
            report(metrics)
    if not where.main:  # the trial's result is rank 0's
        report({**metrics, "epoch": cfg.optim.epochs, "done": True})
        return {}
    evaluating = time.perf_counter()
    final = _with_gain(_evaluate(cfg, method, td, device, None, cfg.optim.epochs, final=True), init)
    final["train_time_s"] = time.perf_counter() - started
    final["final_eval_s"] = time.perf_counter() - evaluating  # the price of reference_fp32, per trial
    if cfg.eval.finetune:
        final.update(_finetune(cfg, method, td, device, precision))
    final.update(
        device=str(device),
        precision=cfg.system.precision,
        eval_precision=EVAL_PRECISION,
        **memory,
        n_test=len(td.eval_test),
        image_size=data.image_size[0],
    )
    report({**metrics, "epoch": cfg.optim.epochs, **final, "done": True})
    return final


def _precision(cfg: TrialConfig, device: torch.device, resume: dict | None) -> str:
    """``fp32`` or ``bf16``: ``auto`` resolved for ``device``, except that a resumed trial keeps the
    precision it started in (a checkpoint moved to a machine that resolves ``auto`` otherwise would
    switch numerics mid-run); an explicit setting is used as given."""
    here = resolve_precision(cfg.system.precision, device)
    kept = (resume or {}).get("precision") if cfg.system.precision == "auto" else None
    if kept is None or kept == here:
        return here
    print(
        f"resuming in {kept}, the precision this trial started in; system.precision auto would pick "
        f"{here} on this {device.type}",
        file=sys.stderr,
        flush=True,
    )
    return kept


def _train_epoch(
    cfg, method, step_fn: Step, td, gens, device, step, total, epoch, where: distributed.Ranks
) -> tuple[dict[str, float], int]:
    """One pass over the training split; returns (each scalar of ``training_step`` averaged over the
    epoch's steps that returned it, global step). The sums stay on the device until the epoch ends.
    Every rank draws the global batch's random numbers and trains on its shard.

    Each scalar has its own count: a captured CUDA graph returns only what it computes on the
    device (``trainables.step.GraphStep``), so a host-made scalar can be missing from some steps.

    The loss is checked for finiteness every ``system.finite_check_every`` steps (on their sum), as
    each check waits for the device; the last partial window is checked at the end of the epoch.
    """
    method.train()
    if not cfg.optim.train_backbone:  # frozen includes BN statistics (solo-learn's linear eval)
        method.backbone.eval()
    warmup = round(cfg.optim.warmup_fraction * total)
    base_lr = scaled_lr(cfg)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    window, first = torch.zeros((), device=device), step
    rows = distributed.batch_rows(min(cfg.optim.batch_size, len(td.train)), where)
    for views, labels in train_batches(td.train, td.pipeline, cfg.optim.batch_size, gens, device, rows):
        if cfg.system.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        out = step_fn(views, labels, lr_at(step, total, warmup, base_lr), step, total)
        step += 1
        for key, value in out.items():
            sums[key] = sums[key] + value.float() if key in sums else value.float().clone()
            counts[key] = counts.get(key, 0) + 1
        window += out["loss"]
        if (step - first) % cfg.system.finite_check_every == 0:
            _check_finite(window, epoch, first, step)
            window.zero_()
            first = step
    if step > first:
        _check_finite(window, epoch, first, step)
    return {key: float(value) / counts[key] for key, value in sums.items()}, step


def _check_finite(window: torch.Tensor, epoch: int, first: int, step: int) -> None:
    """Raise FloatingPointError if the loss summed over steps ``first + 1 .. step`` is not finite."""
    if not torch.isfinite(window):
        where = f"step {step}" if step == first + 1 else f"steps {first + 1}-{step}"
        raise FloatingPointError(
            f"non-finite loss {window.item()} at epoch {epoch + 1} {where}: the network diverged; "
            "valid: a lower optim.lr"
        )


def _evaluate(cfg, method, td, device, precision, epoch: int, final: bool) -> dict:
    """Features of the evaluation-corrupted train and test splits after ``epoch``, then the metrics:
    in the trial's ``precision`` (per-epoch curves), or with None in IEEE fp32 (``reference_fp32``:
    the final metrics and the untrained kNN, the same on every machine)."""
    if precision is None:  # and an fp32 kNN bank whatever eval.bank_dtype says (a per-epoch speed lever)
        with reference_fp32():
            fp32 = cfg.replace({"eval.bank_dtype": "fp32"})
            return _evaluate(fp32, method, td, device, contextlib.nullcontext(), epoch, final)
    method.eval()
    prepare = eval_prepare(td, cfg.system.channels_last, cfg.data.eval_crop_size, cfg.data.input_size)
    # A fresh generator per evaluation: the same model always gets the same numbers.
    g = torch.Generator().manual_seed(derive_seed(cfg.system.seed, "eval"))
    # A compiled encoder sees one evaluation shape: the last, partial batch is padded.
    opts = {
        "batch_size": cfg.eval.batch_size,
        "autocast": precision,
        "pad": cfg.system.compile,
        "keep_on_device": cfg.eval.on_device,
    }
    with torch.no_grad():
        train = extract_features(method.embed, td.eval_train, td.eval_corruption, prepare, device, g, **opts)
        test = extract_features(method.embed, td.eval_test, td.eval_corruption, prepare, device, g, **opts)
        for split, (feats, _) in (("training", train), ("test", test)):
            if not torch.isfinite(feats).all():  # a finite loss does not rule it out (fp32, huge lr)
                step = epoch * (len(td.train) // cfg.optim.batch_size)
                raise FloatingPointError(
                    f"non-finite {split}-split features at the evaluation after epoch {epoch} (step {step}): "
                    "the network diverged; valid: a lower optim.lr"
                )
        metrics = epoch_metrics(train, test, td.num_classes, cfg.eval)
        if final:
            # Augmented views are already crops: with data.input_size they are only resized to it.
            size = cfg.data.input_size
            view_prepare = eval_prepare(td, cfg.system.channels_last, None, size) if size else prepare
            views = _two_views(
                method, td, view_prepare, device, g, precision, cfg.eval.batch_size if cfg.system.compile else None
            )
            train, test = (tuple(t.cpu() for t in split) for split in (train, test))  # the probe runs on the CPU
            metrics.update(final_metrics(train, test, td.num_classes, cfg.eval, views))
    return metrics


def _finetune(cfg, method, td, device, precision) -> dict[str, float]:
    """``finetune_acc``: a copy of the trained backbone (plain BN) + a new head, trained end to end
    on the evaluation-corrupted training split (``trainables.evaluation.finetune``)."""
    # The network sees what the trial's does: views of data.crop_size (resized to data.input_size where
    # set), test batches as evaluation prepares them.
    augment, resize_to = view_augmentation(cfg.eval.finetune_augmentation, cfg.data.crop_size, cfg.data.input_size)
    pipeline = Pipeline(td.eval_corruption, augment, 1, td.mean, td.std, resize_to)
    backbone = plain_batchnorm(copy.deepcopy(method.backbone))
    return finetune(
        backbone,
        method.feature_dim,
        td.num_classes,
        td.eval_train,
        td.eval_test,
        td.eval_corruption,
        pipeline,
        cfg.eval,
        device,
        cfg.system.seed,
        cfg.system.channels_last,
        precision,
        eval_prepare(td, cfg.system.channels_last, cfg.data.eval_crop_size, cfg.data.input_size),
    )


def _with_gain(metrics: dict, init: dict) -> dict:
    """Adds ``knn_acc_init`` and ``knn_gain`` (points over the untrained network) when measured."""
    if not init:
        return metrics
    return {**metrics, **init, "knn_gain": metrics["knn_acc"] - init["knn_acc_init"]}


def _two_views(method, td, prepare, device, g, precision, pad_to: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features of two augmented views of (up to 1024) test images, for alignment."""
    images = take(td.eval_test, torch.arange(min(1024, len(td.eval_test))), device)
    images = td.eval_corruption(images, g)
    views = []
    for recipe in view_recipes(td.pipeline.augment, 2):  # a per-view recipe (byol) gives each view its own
        with precision:
            views.append(embed_padded(method.embed, prepare(recipe(images, g)), pad_to).float().cpu())
    return views[0], views[1]


def _state(epoch: int, step: int, history: list, method, optimizer, gens) -> dict:
    return {
        "epoch": epoch,
        "step": step,
        "history": history,
        "method": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generators": {k: g.get_state() for k, g in gens.items()},
    }


def _restore(state: dict, method, optimizer, gens) -> tuple[int, int, list]:
    _check_fits(state["method"], method)
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    _match_param_layouts(optimizer)
    for k, g in gens.items():
        g.set_state(state["generators"][k])
    return state["epoch"], state["step"], list(state["history"])


def _match_param_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (momentum buffers) its parameter's strides.

    ``load_state_dict`` keeps the saved strides, and the memory format is chosen anew at every launch
    (``trainables.memory_format``): a buffer saved channels_last meets a contiguous parameter after a
    resume on another CPU or device. Fused SGD walks both as flat memory and would apply a permuted
    update (foreach and the per-parameter loop follow each tensor's strides and are unaffected)."""
    for p, s in optimizer.state.items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                s[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _check_fits(saved: dict, method) -> None:
    """ValueError (one line) when a saved state holds another model than ``method`` (another method,
    width or backbone): ``load_state_dict`` would list every parameter over hundreds of lines."""
    own = method.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    reshaped = [
        k
        for k in own
        if k in saved
        and isinstance(own[k], torch.Tensor)  # extra state (e.g. a dict) has no shape
        and tuple(own[k].shape) != tuple(getattr(saved[k], "shape", ()))
    ]
    if missing or unexpected or reshaped:
        parts = [
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
            if keys
        ]
        raise ValueError(
            f"the checkpoint holds another model than this trial's {type(method).__name__}: parameters "
            f"{', '.join(parts)}; valid: a checkpoint of the same method and model settings"
        )
