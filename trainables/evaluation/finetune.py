"""Fine-tuning evaluation: the whole pretrained network plus a new linear head, trained on labels.

The study's downstream protocol (docs/study.md §2.3-2.4) fine-tunes a pretrained network on the
corrupted CIFAR-10 training split and reports test accuracy on the corrupted test split; the
frozen linear probe (``probe.py``) is its cheaper variant. Here both the backbone and a fresh
``Linear(feature_dim, num_classes)`` train with cross-entropy for ``eval.finetune_epochs`` on the
evaluation-corrupted training split, one augmented view per image (``eval.finetune_augmentation``,
pad-crop + flip by default), with ``eval.finetune_optimizer`` and a cosine learning rate from
``eval.finetune_lr`` (given at batch 256, scaled linearly like ``optim.lr``) to 0, no warm-up.

NOTE: the study fine-tuned ImageNet-pretrained ResNet-18s and ViT-Ss with its own recipe (docs/study.md);
epochs, optimizer and learning rate here are ours, chosen in the trial config.

The caller passes the backbone to train (a copy, if the trial's own must stay as it is): it is
changed in place, BN statistics included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from corruptions import Corruption
from trainables.config import EvalConfig
from trainables.data.augment import normalize, to_float
from trainables.data.batches import Pipeline, eval_batches, train_batches
from trainables.data.datasets import Split
from trainables.optim import build_optimizer, lr_at, set_lr
from trainables.seeding import derive_seed, generators


def finetune(
    backbone: nn.Module,
    feature_dim: int,
    num_classes: int,
    train: Split,
    test: Split,
    corruption: Corruption,
    pipeline: Pipeline,
    cfg: EvalConfig,
    device: torch.device,
    seed: int,
    channels_last: bool = False,
    autocast: contextlib.AbstractContextManager | None = None,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Fine-tune ``backbone`` + a new linear head on ``train``, then score ``test``.

    Args:
        backbone: (B, 3, H, W) float -> (B, feature_dim); trained in place (every parameter).
        feature_dim: D.
        num_classes: C.
        train: the (fixed-part) corrupted training split, uint8 images and labels, on ``device``.
        test: the (fixed-part) corrupted test split.
        corruption: the per-batch part of the evaluation corruption (both splits).
        pipeline: corruption, one-view augmentation and normalisation of a training batch (and its
            resize to the network's input side, ``data.input_size``, where set).
        cfg: ``finetune_epochs``, ``finetune_optimizer``, ``finetune_lr``, ``finetune_weight_decay``,
            ``finetune_batch_size`` and ``batch_size`` (test batches).
        device: where to train.
        seed: the trial seed; head init, data order, corruption and augmentation derive from it.
        channels_last: network inputs in channels_last (the trial's memory format).
        autocast: the trial's precision context (bf16 autocast or none).
        prepare: (B, C, H, W) uint8 test batch -> network input, as the trial evaluates
            (``trainables.build.eval_prepare``: its centre crop, input size and memory format); None: normalised
            with the pipeline's mean and std.

    Returns:
        ``{"finetune_acc": test top-1 in percent [0, 100], "finetune_loss": last epoch's mean training loss}``.

    Raises:
        FloatingPointError: a non-finite training loss (the lr is too high).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "finetune_head"))
        head = nn.Linear(feature_dim, num_classes)
    model = nn.Sequential(backbone, head).to(device).requires_grad_(True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = min(cfg.finetune_batch_size, len(train))
    steps_per_epoch = len(train) // batch  # >= 1: batch <= len(train)
    total = steps_per_epoch * cfg.finetune_epochs
    base_lr = cfg.finetune_lr * batch / 256
    optimizer = build_optimizer(model, cfg.finetune_optimizer, base_lr, cfg.finetune_weight_decay, 0.9)
    gens = generators(derive_seed(seed, "finetune"))
    precision = autocast or contextlib.nullcontext()
    step, loss_sum = 0, torch.zeros((), device=device)
    for epoch in range(cfg.finetune_epochs):
        model.train()
        loss_sum.zero_()
        for views, labels in train_batches(train, pipeline, batch, gens, device):
            x = _channels_last(views[0], channels_last)
            set_lr(optimizer, lr_at(step, total, 0, base_lr))
            with precision:
                loss = F.cross_entropy(model(x).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(
                f"non-finite fine-tuning loss in epoch {epoch + 1}; valid: a lower eval.finetune_lr"
            )
    if prepare is None:

        def prepare(images: Tensor) -> Tensor:
            return _channels_last(normalize(to_float(images), pipeline.mean, pipeline.std), channels_last)

    acc = _accuracy(model, test, corruption, prepare, cfg.batch_size, device, seed, precision)
    return {"finetune_acc": acc, "finetune_loss": float(loss_sum) / steps_per_epoch}


@torch.no_grad()
def _channels_last(x: Tensor, on: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if on else x


def _accuracy(model, test: Split, corruption, prepare, batch_size, device, seed, precision):
    """Top-1 (%) of ``model`` on every image of ``test``: corrupted, ``prepare``d, no augmentation."""
    model.eval()
    g = torch.Generator().manual_seed(derive_seed(seed, "eval"))
    correct = 0
    for images, labels in eval_batches(test, corruption, batch_size, device, g):
        x = prepare(images)
        with precision:
            logits: Tensor = model(x)
        correct += int((logits.argmax(1) == labels).sum())
    return 100.0 * correct / len(test)
