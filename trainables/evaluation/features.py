"""Geometry of a feature set: uniformity, alignment and class-to-class distances.

All metrics work on L2-normalised features (normalised inside), as the study's
``main_uniformity.py`` does for uniformity (docs/study.md §5). Pairwise quantities are computed
from Gram-matrix blocks or class sums rather than an (N, N) distance matrix, so 10k+ features
fit in a few tens of MB. Accumulation is in float64: a mean of 5e7 terms in float32 would
lose the third digit that the study reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["alignment", "classwise_uniformity", "feature_distance_matrix", "uniformity"]

_BLOCK_BUDGET = 32 * 2**20  # bytes per Gram block in ``uniformity``


def uniformity(x: Tensor, t: float = 2.0, block_rows: int | None = None) -> float:
    """Study's uniformity: ``-log mean_{i<j} exp(-t ||x_i - x_j||^2)`` on normalised features.

    This is minus Wang & Isola's L_uniform, so it is positive and higher is more uniform
    (at most ~4 for t=2 on a high-dimensional sphere; the study reports 2-3). It equals the
    study's ``torch.pdist`` formulation; on the unit sphere ``||a - b||^2 = 2 - 2 a.b``, so the
    distances come from row blocks of the Gram matrix, only its upper triangle.

    Args:
        x: (N, D) float features, any scale (normalised here).
        t: temperature of the Gaussian potential; the study uses 2.
        block_rows: rows per Gram block; None picks it from a 32 MiB budget.

    Returns:
        The uniformity; NaN if N < 2.
    """
    n = x.shape[0]
    if n < 2:
        return math.nan
    z = F.normalize(x, dim=1)
    rows = block_rows or max(1, _BLOCK_BUDGET // (4 * n))
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        gram = z[start:stop] @ z[start:].T  # (b, n - start): pairs (i, j) with j >= start
        kernel = torch.exp(-t * (2 - 2 * gram).clamp_min(0))
        width = stop - start
        # Within the diagonal block keep j > i only; later columns are all j > i.
        total += torch.triu(kernel[:, :width], diagonal=1).sum(dtype=torch.float64)
        total += kernel[:, width:].sum(dtype=torch.float64)
    return -math.log(total.item() / (n * (n - 1) / 2))


def classwise_uniformity(x: Tensor, labels: Tensor, num_classes: int, t: float = 2.0) -> Tensor:
    """``uniformity`` restricted to each class's features (the study's per-class curves).

    Args:
        x: (N, D) float features.
        labels: (N,) int64 in [0, num_classes).
        num_classes: C.
        t: as in ``uniformity``.

    Returns:
        (C,) float64; NaN for classes with fewer than 2 samples.
    """
    values = [uniformity(x[labels == c], t) for c in range(num_classes)]
    return torch.tensor(values, dtype=torch.float64)


def feature_distance_matrix(x: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean squared distance between classes, ``d_ij = E_{a in i, b in j} ||f(a) - f(b)||^2``.

    Features are L2-normalised (docs/study.md §5: the study leaves this open; normalised matches uniformity).
    Off the diagonal the expectation is over all ``n_i * n_j`` pairs; on the diagonal it is
    over the ``n_i * (n_i - 1)`` ordered pairs of *distinct* samples (self pairs, always 0,
    are excluded, so ``d_ii`` is the intra-class spread). Closed form from class sums
    ``s_i`` and squared-norm sums ``q_i``: ``sum_{a,b} ||a - b||^2 = n_j q_i + n_i q_j - 2 s_i.s_j``.

    Args:
        x: (N, D) float features.
        labels: (N,) int64 in [0, num_classes).
        num_classes: C.

    Returns:
        (C, C) float64, symmetric; NaN where a class is empty, and on the diagonal for
        classes with a single sample.
    """
    z = F.normalize(x.double(), dim=1)
    counts = torch.bincount(labels, minlength=num_classes).double()
    sums = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, labels, z)
    sq = torch.zeros(num_classes, dtype=torch.float64, device=x.device)
    sq.index_add_(0, labels, z.pow(2).sum(dim=1))
    pair_sums = counts[None, :] * sq[:, None] + counts[:, None] * sq[None, :] - 2 * sums @ sums.T
    pairs = counts[:, None] * counts[None, :] - torch.diag(counts)  # drop the n_i self pairs
    return pair_sums / pairs.where(pairs > 0, torch.nan)


def alignment(x1: Tensor, x2: Tensor, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment ``mean_i ||x1_i - x2_i||^alpha`` on normalised features.

    Lower is better aligned; in [0, 2**alpha].

    Args:
        x1: (N, D) float, features of one view.
        x2: (N, D) float, features of the paired view, row i matching row i of ``x1``.
        alpha: exponent; Wang & Isola use 2.

    Returns:
        The alignment.
    """
    diff = F.normalize(x1, dim=1) - F.normalize(x2, dim=1)
    return diff.norm(dim=1).pow(alpha).double().mean().item()


PER_CLASS_LIMIT = 100  # above this many classes only the class means are logged per epoch


def geometry_scalars(x: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Class geometry of one evaluation as flat scalars (the supplement's Figure A.1 per epoch).

    Keys: ``classwise_uniformity_mean``, ``intra_distance`` (mean of the diagonal of
    ``feature_distance_matrix``) and ``inter_distance`` (mean of its off-diagonal entries), each
    averaged over classes with a value; and, for at most ``PER_CLASS_LIMIT`` classes, the
    per-class values ``classwise_uniformity/<c>``, ``intra_distance/<c>`` and
    ``inter_distance/<c>`` (class ``c``'s mean distance to the other classes).

    Args:
        x: (N, D) float features.
        labels: (N,) int64 in [0, num_classes).
        num_classes: C.

    Returns:
        Finite floats only: classes without a value (too few samples) are left out.
    """
    cu = classwise_uniformity(x, labels, num_classes)
    d = feature_distance_matrix(x, labels, num_classes)
    intra = torch.diagonal(d)
    off = d.masked_fill(torch.eye(num_classes, dtype=torch.bool, device=d.device), torch.nan)
    inter = off.nanmean(dim=1) if num_classes > 1 else torch.full((1,), torch.nan, dtype=d.dtype)
    out: dict[str, float] = {}
    for name, values in (("classwise_uniformity", cu), ("intra_distance", intra), ("inter_distance", inter)):
        values = values.cpu()
        finite = values[torch.isfinite(values)]
        if len(finite):
            out["classwise_uniformity_mean" if name == "classwise_uniformity" else name] = float(finite.mean())
        if num_classes <= PER_CLASS_LIMIT:
            out.update({f"{name}/{c}": float(v) for c, v in enumerate(values.tolist()) if math.isfinite(v)})
    return out
