"""The evaluation protocol: features of the evaluation-corrupted splits, then the study's metrics.

Features are extracted once per evaluation without augmentation from the splits corrupted with
the evaluation corruption; every metric is then a pure function from ``trainables.evaluation``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from corruptions import Corruption
from trainables.config import EvalConfig
from trainables.data.batches import eval_batches
from trainables.data.datasets import Split
from trainables.evaluation import (
    alignment,
    classwise_uniformity,
    expected_calibration_error,
    feature_distance_matrix,
    geometry_scalars,
    knn_accuracy,
    linear_probe,
    uniformity,
)

STUDY_KNN_K = 200  # --knn_k=200 in every pretraining script of the study
Prepare = Callable[[Tensor], Tensor]  # (B,C,H,W) uint8 -> normalised float input


GPU_KNN_BUDGET = 2**30  # bytes for the kNN's similarity chunks on a GPU (the CPU default is 64 MiB)


# The fp32 precision switches of every backend a forward pass may use (torch's per-backend API; the
# legacy allow_tf32 flags raise once anything has used this one).
_FP32_SWITCHES = (
    ("cudnn", "conv"),
    ("cuda", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "matmul"),
)


@contextlib.contextmanager
def reference_fp32() -> Iterator[None]:
    """IEEE fp32 features, whatever the trial trains in: no autocast (the caller passes none), no
    TF32 or bf16 inside fp32 convolutions and matmuls (``torch.backends.*.fp32_precision`` "ieee",
    restored after), and compiled encoders run eagerly (a compiled graph guards on the autocast
    state: the other precision would recompile it).

    The final metrics and the untrained kNN they are compared with run inside it, so a verdict does
    not depend on the machine: on one trained MoCo-v2, bf16 features moved the study's euclidean kNN
    by 0.2 points (6 of 3,000 test images; docs/devices.md), the size of the study's seed noise
    (82.44 +- 0.18).
    """
    switches = [getattr(getattr(torch.backends, backend), op) for backend, op in _FP32_SWITCHES]
    saved = [s.fp32_precision for s in switches]
    try:
        for s in switches:
            s.fp32_precision = "ieee"
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        for s, value in zip(switches, saved, strict=True):
            s.fp32_precision = value


@torch.no_grad()
def extract_features(
    embed: Callable[[Tensor], Tensor],
    split: Split,
    corruption: Corruption,
    prepare: Prepare,
    device: torch.device,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    autocast: contextlib.AbstractContextManager | None = None,
    pad: bool = False,
    keep_on_device: bool = False,
) -> tuple[Tensor, Tensor]:
    """Backbone features of every image of ``split``: (N, D) float32 and (N,) labels, on the CPU
    or, with ``keep_on_device``, on ``device``. ``pad``: the last, partial batch goes through the
    network padded to ``batch_size`` (``embed_padded``), so a compiled encoder sees one shape."""
    feats, labels = [], []
    for images, y in eval_batches(split, corruption, batch_size, device, generator):
        with autocast or contextlib.nullcontext():
            f = embed_padded(embed, prepare(images), batch_size if pad else None).float()
        feats.append(f if keep_on_device else f.cpu())
        labels.append(y if keep_on_device else y.cpu())
    return torch.cat(feats), torch.cat(labels)


def embed_padded(embed: Callable[[Tensor], Tensor], x: Tensor, size: int | None) -> Tensor:
    """``embed(x)`` for (B, C, H, W) ``x``, run in chunks of exactly ``size`` rows (the last padded
    with zeros, its padding rows dropped from the output) when ``size`` is given. An eval-mode
    network treats rows independently, so the padding changes no real row's features."""
    if size is None:
        return embed(x)
    out = []
    for start in range(0, x.shape[0], size):
        chunk = x[start : start + size]
        n = chunk.shape[0]
        if n < size:
            fill = chunk.new_zeros((size - n, *chunk.shape[1:]))
            layout = (
                torch.channels_last
                if chunk.dim() == 4 and chunk.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format
            )
            chunk = torch.cat([chunk, fill]).contiguous(memory_format=layout)
        out.append(embed(chunk)[:n])
    return torch.cat(out)


def epoch_metrics(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int, cfg: EvalConfig
) -> dict[str, float]:
    """kNN accuracy (%) of test on the training bank, test-set uniformity and class geometry
    (``geometry_scalars``: class-wise uniformity, intra- and inter-class distances)."""
    bank_x, bank_y = train
    if cfg.bank_size is not None and len(bank_x) > cfg.bank_size:
        bank_x, bank_y = bank_x[: cfg.bank_size], bank_y[: cfg.bank_size]
    k = min(cfg.knn_k, len(bank_x))
    budget = {"memory_budget": GPU_KNN_BUDGET} if bank_x.is_cuda else {}
    # bf16 (eval.bank_dtype) only for the cosine kNN: its features are unit vectors. Raw features'
    # squared norms (the euclidean kNN's bias, in the hundreds) would keep 2-3 significant digits.
    low = cfg.bank_dtype == "bf16" and cfg.knn_distance == "cosine"
    knn_bank, knn_test = (bank_x.bfloat16(), test[0].bfloat16()) if low else (bank_x, test[0])
    acc = knn_accuracy(
        knn_bank,
        bank_y,
        knn_test,
        test[1],
        num_classes,
        k=k,
        temperature=cfg.knn_temperature,
        distance=cfg.knn_distance,
        **budget,
    )
    # The study's own metric beside ours: solo-learn's WeightedKNNClassifier as its scripts ran it
    # (--knn_k=200, euclidean distance on unnormalised backbone features, weights 1/(d + 1e-5)).
    # NOTE: its online kNN banks the augmented crops of the epoch; ours, the unaugmented split.
    study = (
        acc
        if cfg.knn_distance == "euclidean"
        else knn_accuracy(
            bank_x,
            bank_y,
            test[0],
            test[1],
            num_classes,
            k=min(STUDY_KNN_K, len(bank_x)),
            distance="euclidean",
            **budget,
        )
    )
    return {
        "knn_acc": acc,
        "knn_acc_study": study,
        "uniformity": uniformity(test[0]),
        **geometry_scalars(test[0], test[1], num_classes),
    }


def final_metrics(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    cfg: EvalConfig,
    views: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Probe accuracy and ECE, class-wise uniformity, class x class feature distances, alignment."""
    out: dict = {}
    if cfg.probe:
        probe = linear_probe(train[0], train[1], test[0], test[1], num_classes)
        out["probe_acc"] = float(probe["acc"])
        out["ece"] = float(expected_calibration_error(probe["logits"], test[1]))
    out["classwise_uniformity"] = [float(v) for v in classwise_uniformity(test[0], test[1], num_classes)]
    out["feature_distance"] = feature_distance_matrix(test[0], test[1], num_classes).tolist()
    if views is not None:
        out["alignment"] = float(alignment(F.normalize(views[0], dim=1), F.normalize(views[1], dim=1)))
    return out
