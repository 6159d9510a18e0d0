"""Self-supervised and supervised losses as pure functions of tensors.

Every function here takes embeddings (and labels) and returns a scalar loss; nothing holds
state. State such as the MoCo queue, the BYOL target network or the DINO centre lives in the
method that calls these functions (``update_center`` returns a new centre, it mutates nothing).

Conventions:
    * ``B`` batch size, ``D`` embedding width, ``K`` queue length or number of prototypes,
      ``V`` number of views.
    * Losses are means over anchors / samples, so they do not scale with the batch size.
    * Stop-gradients that belong to a method (BYOL's target branch, MoCo's key encoder) are
      the caller's job; the one exception is DINO's teacher, whose ``detach`` is part of the
      published loss (the centred, sharpened teacher is a fixed target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "barlow_twins",
    "byol_loss",
    "cross_entropy",
    "dino_loss",
    "info_nce",
    "moco_v3_loss",
    "nt_xent",
    "supcon",
    "teacher_mean",
    "update_center",
]

Views = Tensor | Sequence[Tensor]


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean softmax cross-entropy for the supervised baseline.

    Args:
        logits: (B, C) float, unnormalised class scores.
        labels: (B,) int64 in [0, C).
        label_smoothing: in [0, 1); 0 is the plain loss.

    Returns:
        Scalar loss.
    """
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None,
    temperature: float = 0.2,
    batch_keys: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """MoCo's InfoNCE: a (K+1)-way classification of the positive key among negatives.

    With a queue, row ``i`` scores ``[q_i.k_i, q_i.queue_1, ..., q_i.queue_K] / T`` and the
    target is index 0 (He et al. 2020, Eq. 1). Without a queue the other keys of the batch are
    the negatives (SimCLR-style in-batch negatives, one direction only), so row ``i`` scores
    ``q_i.k_j / T`` over all ``j`` with target ``i``.

    Inputs are expected to be L2-normalised already (MoCo normalises in the model and stores
    normalised keys in the queue); they are not re-normalised here, so the logits are cosine
    similarities only if the caller normalised.

    Args:
        query: (B, D) float, L2-normalised query embeddings (carry gradients).
        key: (B, D) float, L2-normalised positive keys (usually detached by the caller).
        queue: (K, D) float, L2-normalised negatives, or None for in-batch negatives.
        temperature: softmax temperature T > 0.
        batch_keys: (N, D), the in-batch keys when they are more than ``key`` (a data-parallel
            trial's keys of every rank, ``key`` being rows ``offset .. offset + B - 1``).
        offset: where ``key`` starts in ``batch_keys``.

    Returns:
        Scalar loss, mean over the B queries.
    """
    # fp32 whatever the caller's autocast: under bf16 autocast the matmul of the negatives would
    # run in bf16 (~3 significant digits) while the positive's elementwise product stays fp32.
    with torch.autocast(query.device.type, enabled=False):
        query, key = query.float(), key.float()
        if queue is None:
            logits = query @ (key if batch_keys is None else batch_keys.float()).T / temperature
            targets = offset + torch.arange(query.shape[0], device=query.device)
            return F.cross_entropy(logits, targets)
        positive = (query * key).sum(dim=1, keepdim=True)
        negatives = query @ queue.float().T
        logits = torch.cat([positive, negatives], dim=1) / temperature
        targets = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return F.cross_entropy(logits, targets)


def moco_v3_loss(
    q1: Tensor,
    q2: Tensor,
    k1: Tensor,
    k2: Tensor,
    temperature: float = 0.2,
    all_k1: Tensor | None = None,
    all_k2: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """MoCo v3's symmetric contrastive loss ``ctr(q1, k2) + ctr(q2, k1)`` (Chen, Xie, He 2021, Alg. 1).

    ``ctr(q, k) = 2 T * CE(q k^T / T, arange(B))`` on L2-normalised ``q`` and ``k``: InfoNCE with
    the other keys of the batch as negatives (no queue). The ``2 T`` factor is the official code's
    (``moco_v3/builder.py``): it makes the gradient's scale independent of T. Inputs are normalised
    here, as the official ``ctr`` does; the keys' stop-gradient is the caller's.

    Args:
        q1, q2: (B, D) float, predictor outputs of views 1 and 2 (carry gradients).
        k1, k2: (B, D) float, momentum-encoder projections of views 1 and 2.
        temperature: softmax temperature T > 0 (0.2 for ViTs, 1.0 for ResNets in the paper).
        all_k1, all_k2: (N, D), a data-parallel trial's keys of every rank (the official
            ``concat_all_gather``), ``k1``/``k2`` being rows ``offset .. offset + B - 1``; None: ``k1``, ``k2``.

    Returns:
        Scalar loss: the sum of the two directions, each a mean over B queries, times 2 T.
    """
    with torch.autocast(q1.device.type, enabled=False):
        q1, q2, k1, k2 = (F.normalize(t.float(), dim=1) for t in (q1, q2, k1, k2))
        all_k1, all_k2 = (None if a is None else F.normalize(a.float(), dim=1) for a in (all_k1, all_k2))
        ctr = info_nce(q1, k2, None, temperature, all_k2, offset) + info_nce(q2, k1, None, temperature, all_k1, offset)
    return 2 * temperature * ctr


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2, anchors: slice | None = None) -> Tensor:
    """SimCLR's NT-Xent over the 2B views (Chen et al. 2020, Eq. 1).

    Each of the 2B embeddings is an anchor; its positive is the other view of the same image
    and the remaining 2B - 2 embeddings are negatives; the anchor itself is excluded from the
    denominator. Inputs are L2-normalised here (the loss is defined on cosine similarity).

    Args:
        z1: (B, D) float, first view's projections.
        z2: (B, D) float, second view's projections.
        temperature: softmax temperature T > 0.
        anchors: samples (rows of ``z1`` and ``z2``) whose two views are the anchors, e.g. a
            data-parallel rank's shard ``slice(r b, (r + 1) b)`` of the gathered batch; every other
            embedding still serves as a negative. None: all B samples.

    Returns:
        Scalar loss, mean over the anchors (2B of them, or 2 per sample of ``anchors``).
    """
    # fp32 whatever the caller's autocast (as info_nce): a bf16 similarity matmul would make this
    # differ from supcon with instance labels, which runs in fp32.
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1.float(), z2.float()], dim=0), dim=1)
        n, batch = z.shape[0], z1.shape[0]
        rows = _anchor_rows(batch, 2, anchors, z.device)
        logits = _without_self((z if anchors is None else z[rows]) @ z.T / temperature, rows)
        targets = (rows + batch) % n
        return F.cross_entropy(logits, targets)


def supcon(
    features: Views, labels: Tensor, temperature: float = 0.1, form: str = "out", anchors: slice | None = None
) -> Tensor:
    """Supervised contrastive loss, the paper's L^sup_out or solo-learn's sum-inside-the-log form.

    All ``V * B`` embeddings are anchors. For anchor ``i`` with positives ``P(i)`` (same label,
    any view, not ``i`` itself) and ``A(i)`` = everything but ``i``:

    * ``form="out"``, Khosla et al. 2020 Eq. 2::

        L_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a in A(i)} exp(z_i.z_a / T) )

    * ``form="in"``, solo-learn's ``simclr_loss_func(z, indexes=labels)``, which the study's SupCon
      (``run_supcon_res_cifar10.sh``) trained with::

        L_i = -log( sum_{p in P(i)} exp(z_i.z_p / T) / sum_{a in A(i)} exp(z_i.z_a / T) )

      NOTE: Khosla's L^sup_in has 1/|P(i)| inside the log; solo-learn leaves it out. That shifts
      each anchor's loss by the constant log|P(i)|, so the gradients are the same.

    With instance labels (``labels = arange(B)``) and two views both forms are exactly
    ``nt_xent``. Anchors without any positive (a single view of a class seen once) are left out
    of the mean instead of producing NaN (solo-learn would give inf; with two views every anchor
    has one). Computed in fp32 whatever the caller's autocast (solo-learn: fp16 under AMP).

    NOTE: no ``temperature / base_temperature`` factor (SupContrast's reference code); with its
    default base_temperature == temperature the factor is 1, and solo-learn drops it too.

    Args:
        features: (B, V, D) float, or a sequence of V tensors (B, D); normalised here.
        labels: (B,) int64 class labels, shared by the V views of a sample.
        temperature: softmax temperature T > 0.
        form: ``"out"`` or ``"in"``, as above.
        anchors: samples (rows of ``features`` and ``labels``) whose views are the anchors, e.g. a
            data-parallel rank's shard ``slice(r b, (r + 1) b)`` of the gathered batch; every other
            embedding still counts in ``P(i)`` and ``A(i)``. None: all B samples.

    Returns:
        Scalar loss, mean over anchors that have at least one positive.
    """
    if form not in ("in", "out"):
        raise ValueError(f"supcon form {form!r} is invalid; valid: in, out")
    views = list(features.unbind(dim=1)) if isinstance(features, Tensor) else list(features)
    with torch.autocast(views[0].device.type, enabled=False):
        z = F.normalize(torch.cat(views, dim=0).float(), dim=1)
        view_labels = labels.repeat(len(views))
        rows = _anchor_rows(labels.shape[0], len(views), anchors, z.device)
        own = _self_mask(rows, z.shape[0])  # an anchor is neither its own negative nor its own positive
        logits = ((z if anchors is None else z[rows]) @ z.T / temperature).masked_fill(own, float("-inf"))
        positive = (view_labels[rows, None] == view_labels[None, :]) & ~own
        n_pos = positive.sum(dim=1)
        has_pos = n_pos > 0
        if form == "in":
            # An anchor without positives would be logsumexp(all -inf) = -inf, whose backward is NaN
            # even when the anchor is dropped from the mean: give its row zeros instead.
            pos_logits = torch.where(has_pos[:, None], logits.masked_fill(~positive, float("-inf")), 0.0)
            per_anchor = torch.logsumexp(logits, dim=1) - torch.logsumexp(pos_logits, dim=1)
            return per_anchor[has_pos].mean()
        log_prob = F.log_softmax(logits, dim=1)
        # where() rather than a product: the diagonal of log_prob is -inf and -inf * 0 is NaN.
        pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised MSE, ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`` (Grill et al. 2020, Eq. 2).

    Args:
        p: (B, D) float, online predictions.
        z: (B, D) float, target projections (the caller detaches the target branch).

    Returns:
        Scalar loss in [0, 4], mean over the batch.
    """
    return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def barlow_twins(z1: Tensor, z2: Tensor, lambd: float = 0.0051, scale: float = 1.0, eps: float = 1e-5) -> Tensor:
    """Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, Eq. 1).

    Each embedding dimension is standardised over the batch (as a ``BatchNorm1d(affine=False)``
    in training mode: biased variance plus ``eps``), then ``C = z1n.T @ z2n / B`` and::

        loss = scale * ( sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 )

    NOTE: the paper has no ``scale``; solo-learn multiplies by ``scale_loss`` (0.1 in its
    CIFAR config ``scripts/pretrain/cifar/barlow.yaml``), so pass ``scale=0.1`` to match it.
    The paper's pseudocode divides by the unbiased std without eps; the official code and
    solo-learn use ``BatchNorm1d(affine=False)`` as here (a factor (B-1)/B on C).

    Args:
        z1: (B, D) float, first view's projections, B >= 2.
        z2: (B, D) float, second view's projections.
        lambd: weight of the off-diagonal (redundancy) term.
        scale: overall multiplier.
        eps: variance floor of the standardisation.

    Returns:
        Scalar loss.
    """
    # fp32 whatever the caller's autocast: CPU autocast (unlike CUDA's) leaves pow and sum in bf16,
    # and the off-diagonal term is a difference of two large sums (~0.5% off fp64 at B 64-256, D 256-2048).
    with torch.autocast(z1.device.type, enabled=False):
        batch = z1.shape[0]
        c = _standardise(z1.float(), eps).T @ _standardise(z2.float(), eps) / batch
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return scale * (on_diag + lambd * off_diag)


def dino_loss(
    student_logits: Views,
    teacher_logits: Views,
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """DINO's cross-entropy between a centred, sharpened teacher and the student (Caron et al. 2021).

    Teacher targets are ``softmax((t - center) / teacher_temp)`` (detached); the student gives
    ``log_softmax(s / student_temp)``. With sequences of views, every (teacher view ``a``,
    student view ``b``) pair with ``a != b`` contributes and the loss is the mean over pairs;
    the first teacher views are taken to be the same crops as the first student views (the
    global crops come first, as in DINO). Two plain tensors form a single pair: pass the
    student's logits for one view and the teacher's for the other.

    The teacher temperature schedule (DINO warms it from 0.04 to 0.07) belongs to the method.

    Args:
        student_logits: (B, K) float, or a sequence of Vs tensors (B, K).
        teacher_logits: (B, K) float, or a sequence of Vt <= Vs tensors (B, K).
        center: (K,) float, running mean of teacher logits (see ``update_center``).
        student_temp: student softmax temperature.
        teacher_temp: teacher softmax temperature, lower than the student's to sharpen.

    Returns:
        Scalar loss, mean over pairs and samples.
    """
    single = isinstance(student_logits, Tensor) and isinstance(teacher_logits, Tensor)
    log_students = [F.log_softmax(s / student_temp, dim=1) for s in _as_views(student_logits)]
    teachers = [F.softmax((t - center) / teacher_temp, dim=1).detach() for t in _as_views(teacher_logits)]
    total, pairs = log_students[0].new_zeros(()), 0
    for a, target in enumerate(teachers):
        for b, log_student in enumerate(log_students):
            if a == b and not single:
                continue
            total = total - (target * log_student).sum(dim=1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs a (teacher, student) pair of different views")
    return total / pairs


@torch.no_grad()
def teacher_mean(teacher_logits: Views) -> Tensor:
    """DINO's batch centre: the mean teacher logit over every row of every view.

    Args:
        teacher_logits: (B, K) float, or a sequence of views (B, K).

    Returns:
        (K,) mean over the V B rows.
    """
    return torch.cat(_as_views(teacher_logits), dim=0).mean(dim=0)


@torch.no_grad()
def update_center(center: Tensor, batch_center: Tensor, momentum: float = 0.9) -> Tensor:
    """DINO's centre EMA: ``momentum * center + (1 - momentum) * batch_center``.

    Args:
        center: (K,) float, current centre.
        batch_center: (K,) float, the batch's mean teacher logit (``teacher_mean``; a data-parallel
            trial's is averaged over the ranks).
        momentum: EMA coefficient in [0, 1].

    Returns:
        (K,) new centre (the input is not modified).
    """
    return center * momentum + batch_center * (1 - momentum)


def _anchor_rows(batch: int, views: int, anchors: slice | None, device: torch.device) -> Tensor:
    """(A,) int64: the rows of the ``views`` x ``batch`` stacked views that are anchors: every view of
    the samples in ``anchors`` (all of them for None), view-major as the stacking."""
    samples = torch.arange(batch, device=device)
    if anchors is not None:
        samples = samples[anchors]
    return torch.cat([v * batch + samples for v in range(views)])


def _self_mask(rows: Tensor, n: int) -> Tensor:
    """(A, n) bool: True at anchor ``a``'s own column ``rows[a]`` (the identity for ``rows = arange(n)``)."""
    return rows[:, None] == torch.arange(n, device=rows.device)[None, :]


def _without_self(logits: Tensor, rows: Tensor) -> Tensor:
    """Mask each anchor's own column of (A, N) logits with -inf (an anchor is not its own negative);
    anchor ``a`` is row ``rows[a]`` of the N embeddings."""
    return logits.masked_fill(_self_mask(rows, logits.shape[1]), float("-inf"))


def _standardise(z: Tensor, eps: float) -> Tensor:
    """Zero mean, unit (biased) variance per column of (B, D) ``z``."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def _as_views(x: Views) -> list[Tensor]:
    return [x] if isinstance(x, Tensor) else list(x)
