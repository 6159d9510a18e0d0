"""Weighted k-nearest-neighbour classification of cached features.

Two weightings, both from the study's code (docs/study.md §2.3):

* ``cosine``: features L2-normalised, neighbours by cosine similarity ``s``, vote weight
  ``exp(s / T)`` (Wu et al. 2018, InstDisc; MoCo's kNN monitor with k=200, T=0.1).
* ``euclidean``: raw features, neighbours by L2 distance ``d``, vote weight ``1 / (d + 1e-5)``
  (solo-learn's ``WeightedKNNClassifier`` as used by the study's online kNN); T is unused.

Implementation: test rows are processed in chunks sized from a memory budget; each chunk is one
matmul against the train bank into a preallocated buffer, an exact grouped top-k, and a
``scatter_add_`` of the k weights into (chunk, C) class scores. No (M, k, C) one-hot is built.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_accuracy", "knn_predict", "knn_scores"]

Distance = Literal["cosine", "euclidean"]

_EUCLID_EPS = 1e-5  # solo-learn's WeightedKNNClassifier epsilon
_GROUP = 4  # columns per group in the grouped top-k; 4 was fastest on CPU for k=200, N=10k
_DEFAULT_BUDGET = 64 * 2**20  # bytes for the (chunk, N) similarity buffer and its temporaries


def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: Distance = "cosine",
    chunk_size: int | None = None,
    memory_budget: int = _DEFAULT_BUDGET,
) -> Tensor:
    """Weighted kNN class scores: each class's share of the k neighbours' vote weight.

    NOTE: weights are normalised per query (``softmax(s/T)`` over the k neighbours) and score
    rows sum to 1; InstDisc/solo-learn sum raw ``exp(s/T)``. The argmax is identical, and this
    does not overflow float32 at the study's T=0.01 (raw exp(1/0.01) = exp(100) does).

    Args:
        train_feats: (N, D) float, the feature bank.
        train_labels: (N,) int64 in [0, num_classes).
        test_feats: (M, D) float, queries, same device as the bank.
        num_classes: C.
        k: neighbours per query; clipped to N.
        temperature: T of the cosine weighting (ignored for euclidean).
        distance: "cosine" or "euclidean" (see the module docstring).
        chunk_size: test rows per chunk; None picks it from ``memory_budget``.
        memory_budget: bytes allowed for the per-chunk similarity buffer and temporaries.

    Returns:
        (M, C) float32 scores in [0, 1], rows summing to 1.
    """
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"unknown distance {distance!r}; valid: 'cosine', 'euclidean'")
    n = train_feats.shape[0]
    k = min(k, n)
    bank, bias = _prepare_bank(train_feats, distance, k)
    queries = F.normalize(test_feats, dim=1) if distance == "cosine" else test_feats
    chunk = chunk_size or chunk_rows(bank.shape[0], memory_budget, bank.element_size())
    scores = torch.zeros(queries.shape[0], num_classes, device=queries.device)
    buffer = queries.new_empty(min(chunk, queries.shape[0]), bank.shape[0])
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        sim = buffer[: q.shape[0]]
        _similarity(q, bank, bias, out=sim)
        sim[:, n:] = float("-inf")  # padding columns never win
        top_sim, top_idx = _grouped_topk(sim, k)
        weights = _vote_weights(top_sim, q, distance, temperature)
        scores[start : start + chunk].scatter_add_(1, train_labels[top_idx], weights)
    return scores / scores.sum(dim=1, keepdim=True)


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: Distance = "cosine",
    chunk_size: int | None = None,
    memory_budget: int = _DEFAULT_BUDGET,
) -> Tensor:
    """Weighted kNN predictions; arguments as in ``knn_scores``.

    Returns:
        (M,) int64 predicted labels.
    """
    scores = knn_scores(
        train_feats,
        train_labels,
        test_feats,
        num_classes,
        k,
        temperature,
        distance,
        chunk_size,
        memory_budget,
    )
    return scores.argmax(dim=1)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: Distance = "cosine",
    chunk_size: int | None = None,
    memory_budget: int = _DEFAULT_BUDGET,
) -> float:
    """Top-1 accuracy of ``knn_predict`` against ``test_labels`` (M,), in percent [0, 100]."""
    pred = knn_predict(
        train_feats,
        train_labels,
        test_feats,
        num_classes,
        k,
        temperature,
        distance,
        chunk_size,
        memory_budget,
    )
    return 100.0 * (pred == test_labels).float().mean().item()


def chunk_rows(num_columns: int, memory_budget: int = _DEFAULT_BUDGET, element_size: int = 4) -> int:
    """Test rows per chunk so the (rows, N) buffer plus ~50% temporaries fit ``memory_budget``.

    The temporaries are the group maxima (N/4 + N/16 + ... per row) and top-k's per-row
    scratch; 1.5x the buffer covers them. The 64 MiB default gives ~1.1k rows for a 10k bank
    and ~220 for a 50k bank (peak ~100 MB, far below 2 GB). On CPU, chunks of 1-2k rows
    were ~6% faster than 4.5k (cache-resident temporaries, fewer page faults); on a GPU pass
    a larger budget.
    """
    return max(1, int(memory_budget / (1.5 * num_columns * element_size)))


def _prepare_bank(train_feats: Tensor, distance: Distance, k: int) -> tuple[Tensor, Tensor | None]:
    """Bank (N', D) zero-padded so the grouped top-k can recurse, and the euclidean bias (N',).

    For euclidean, ranking by ``2 a.b - |b|^2`` equals ranking by distance (``|a|^2`` is
    constant per query), so the bank is pre-scaled by 2 and ``-|b|^2`` is added by the matmul.
    """
    n = train_feats.shape[0]
    pad = (-n) % _GROUP ** _topk_levels(n, k)
    if distance == "cosine":
        return F.pad(F.normalize(train_feats, dim=1), (0, 0, 0, pad)), None
    bias = F.pad(-train_feats.pow(2).sum(dim=1), (0, pad))
    return F.pad(2 * train_feats, (0, 0, 0, pad)), bias


def _topk_levels(width: int, k: int) -> int:
    """How many times ``_grouped_topk`` can shrink ``width`` columns by ``_GROUP`` and keep >= k groups."""
    levels = 0
    # Capped at 3 so the zero padding stays below 4**3 columns (for small k it would not).
    while width >= _GROUP * k and levels < 3:
        width = -(-width // _GROUP)
        levels += 1
    return levels


def _similarity(q: Tensor, bank: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """Write (m, N') scores, larger = nearer, into ``out`` without allocating."""
    if bias is None:
        torch.mm(q, bank.T, out=out)
    else:
        torch.addmm(bias, q, bank.T, out=out)


def _grouped_topk(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Exact top-k (values, column indices) per row of (m, W) ``sim``; unsorted.

    Columns are split into W/4 strided groups {j, j + W/4, ...}. A group whose max is not among
    the k largest group maxima cannot hold a top-k element (k other groups each hold a larger
    one), so the top-k groups are found recursively on the (m, W/4) maxima and the final top-k
    runs over their 4k members. On CPU ``topk`` costs ~10 ns per element while the elementwise
    max costs <1 ns, so for W=10k, k=200 this does ~2.2k top-k elements per row instead of 10k.
    Ties may resolve to a different, equally near, neighbour than a full top-k.
    """
    m, width = sim.shape
    if width < _GROUP * k or width % _GROUP:
        return sim.topk(k, dim=1, sorted=False)
    stride = width // _GROUP
    parts = sim.view(m, _GROUP, stride).unbind(dim=1)
    group_max = torch.maximum(parts[0], parts[1])
    for part in parts[2:]:  # elementwise max of contiguous slices: cheaper than amax(dim=1)
        torch.maximum(group_max, part, out=group_max)
    best_groups = _grouped_topk(group_max, k)[1]
    offsets = torch.arange(_GROUP, device=sim.device).mul_(stride)
    columns = (best_groups[:, None, :] + offsets[None, :, None]).view(m, _GROUP * k)
    top_sim, pos = sim.gather(1, columns).topk(k, dim=1, sorted=False)
    return top_sim, columns.gather(1, pos)


def _vote_weights(top_sim: Tensor, q: Tensor, distance: Distance, temperature: float) -> Tensor:
    """(m, k) float32 vote weights from the top-k scores of (m, D) queries ``q``."""
    top_sim = top_sim.float()
    if distance == "cosine":
        # softmax = exp(s/T) up to a per-row factor: same vote, no overflow, one fused op.
        return torch.softmax(top_sim / temperature, dim=1)
    # Recover distances from the scores: |a - b|^2 = |a|^2 - (2 a.b - |b|^2). Near-duplicates
    # lose precision to cancellation, as with torch.cdist's default (matmul) path.
    sq_dist = q.float().pow(2).sum(dim=1, keepdim=True) - top_sim
    return 1.0 / (sq_dist.clamp_min(0).sqrt() + _EUCLID_EPS)
