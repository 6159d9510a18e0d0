"""Reference tests for the losses: each against its paper's formula written out with loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables import losses


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _naive_nt_xent(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR Eq. 1 with explicit loops over the 2B anchors."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        denom = sum(math.exp(z[i] @ z[a] / t) for a in range(n) if a != i)
        total += -math.log(math.exp(z[i] @ z[pos] / t) / denom)
    return total / n


# --- info_nce -------------------------------------------------------------------------------


def test_info_nce__with_queue_matches_hand_computed_softmax():
    q, k, queue, t = _unit(4, 8, seed=1), _unit(4, 8, seed=2), _unit(6, 8, seed=3), 0.2
    expected = 0.0
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[j]) / t) for j in range(6))
        expected += -math.log(pos / (pos + neg))
    assert losses.info_nce(q, k, queue, t).item() == pytest.approx(expected / 4, rel=1e-5)


def test_info_nce__without_queue_uses_other_keys_as_negatives():
    q, k, t = _unit(5, 8, seed=1), _unit(5, 8, seed=2), 0.1
    expected = 0.0
    for i in range(5):
        logits = [float(q[i] @ k[j]) / t for j in range(5)]
        expected += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    assert losses.info_nce(q, k, None, t).item() == pytest.approx(expected / 5, rel=1e-5)


def test_info_nce__aligned_keys_score_lower_than_random_keys():
    q, queue = _unit(16, 32, seed=1), _unit(64, 32, seed=3)
    aligned = losses.info_nce(q, q, queue, 0.2)
    random = losses.info_nce(q, _unit(16, 32, seed=2), queue, 0.2)
    assert aligned < random


# --- moco_v3_loss ---------------------------------------------------------------------------


def _ctr_fp64_loop(q, k, t):
    """MoCo v3's ctr by hand in fp64: 2 t * mean_i -log(exp(q_i.k_i / t) / sum_j exp(q_i.k_j / t))."""
    q, k = (x.double() / x.double().norm(dim=1, keepdim=True) for x in (q, k))
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[j]) / t for j in range(k.shape[0])]
        total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    return 2 * t * total / q.shape[0]


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_moco_v3_loss__matches_an_fp64_loop_over_both_directions(t):
    g = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (3 * torch.randn(6, 8, generator=g) for _ in range(4))  # unnormalised: normalised inside
    expected = _ctr_fp64_loop(q1, k2, t) + _ctr_fp64_loop(q2, k1, t)
    assert losses.moco_v3_loss(q1, q2, k1, k2, t).item() == pytest.approx(expected, rel=1e-5)


def test_moco_v3_loss__is_2t_times_symmetric_in_batch_info_nce():
    q1, q2, k1, k2 = (_unit(5, 8, seed=s) for s in range(4))
    ctr = losses.info_nce(q1, k2, None, 0.3) + losses.info_nce(q2, k1, None, 0.3)
    torch.testing.assert_close(losses.moco_v3_loss(q1, q2, k1, k2, 0.3), 0.6 * ctr)


def test_moco_v3_loss__computes_in_fp32_under_bf16_autocast():
    q1, q2, k1, k2 = (_unit(16, 32, seed=s) for s in range(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = losses.moco_v3_loss(q1, q2, k1, k2)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(
        losses.moco_v3_loss(q1, q2, k1, k2).item(), rel=1e-6
    )


# --- nt_xent / supcon -----------------------------------------------------------------------


def test_nt_xent__matches_naive_loop():
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    expected = _naive_nt_xent(z1.double().numpy(), z2.double().numpy(), 0.5)
    assert losses.nt_xent(z1, z2, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_supcon__instance_labels_equal_nt_xent():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    labels = torch.arange(8)
    expected = losses.nt_xent(z1, z2, 0.2)
    torch.testing.assert_close(losses.supcon([z1, z2], labels, 0.2), expected)
    torch.testing.assert_close(losses.supcon(torch.stack([z1, z2], dim=1), labels, 0.2), expected)


_ANCHORED = {
    "nt_xent": lambda z1, z2, anchors=None: losses.nt_xent(z1, z2, 0.2, anchors),
    "supcon_in": lambda z1, z2, anchors=None: losses.supcon([z1, z2], torch.arange(8) % 3, 0.2, "in", anchors),
    "supcon_out": lambda z1, z2, anchors=None: losses.supcon([z1, z2], torch.arange(8) % 3, 0.2, "out", anchors),
}


@pytest.mark.parametrize("name", sorted(_ANCHORED))
def test_contrastive__shards_of_anchors_average_to_the_whole_batch(name):
    """A data-parallel rank's loss (its shard's anchors against every embedding): the ranks' mean is
    the batch's loss, and so is its gradient (what DDP's averaging of the gathered losses gives)."""
    loss = _ANCHORED[name]
    z1, z2 = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    whole = loss(z1, z2)
    shards = [loss(z1, z2, slice(r * 2, (r + 1) * 2)) for r in range(4)]
    torch.testing.assert_close(sum(shards) / 4, whole)
    torch.testing.assert_close(
        torch.autograd.grad(sum(shards) / 4, [z1, z2]), torch.autograd.grad(whole, [z1, z2]), rtol=1e-5, atol=1e-6
    )
    assert not torch.allclose(shards[0], whole)  # a shard alone is not the batch's loss


def test_supcon__matches_khosla_eq2_loop():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 2, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    t = 0.3
    z = F.normalize(torch.cat([feats[:, 0], feats[:, 1]]), dim=1).double()
    lab = labels.repeat(2)
    total = 0.0
    for i in range(12):
        positives = [p for p in range(12) if p != i and lab[p] == lab[i]]
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(12) if a != i)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in positives]
        total += -sum(terms) / len(terms)
    assert losses.supcon(feats, labels, t).item() == pytest.approx(total / 12, rel=1e-5)


def _naive_supcon_in(z: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    """solo-learn's simclr_loss_func(z, indexes=labels) with loops: z (N, D) is cat(view1, view2, ...)."""
    z = F.normalize(z.double(), dim=1)
    n, total = len(z), 0.0
    for i in range(n):
        pos = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n) if j != i and labels[j] == labels[i])
        neg = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(n) if labels[j] != labels[i])
        total += -math.log(pos / (pos + neg))
    return total / n


def test_supcon_in__matches_solo_learns_simclr_loss_with_label_indexes():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 2, 4, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    expected = _naive_supcon_in(torch.cat([feats[:, 0], feats[:, 1]]), labels.repeat(2), 0.2)
    assert losses.supcon(feats, labels, 0.2, form="in").item() == pytest.approx(expected, rel=1e-5)


def test_supcon_in__instance_labels_equal_nt_xent():
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    torch.testing.assert_close(losses.supcon([z1, z2], torch.arange(8), 0.2, form="in"), losses.nt_xent(z1, z2, 0.2))


def test_supcon_in__is_khoslas_l_in_less_log_positives_with_the_same_gradient():
    # Khosla's L_in = -log(1/|P| sum_p e_p / A); solo-learn drops the 1/|P|: a constant log|P| per anchor.
    g = torch.Generator().manual_seed(1)
    a, b = (torch.randn(6, 8, generator=g, requires_grad=True) for _ in range(2))
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # |P| = 5, 5, 5, 3, 3, 1 per view
    ours = losses.supcon([a, b], labels, 0.3, form="in")
    z = F.normalize(torch.cat([a, b]), dim=1)
    lab = labels.repeat(2)
    logits = (z @ z.T / 0.3).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    positive = (lab[:, None] == lab[None, :]) & ~torch.eye(12, dtype=torch.bool)
    n_pos = positive.sum(1).double()
    log_mean_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), 1) - n_pos.log()
    khosla_in = -(log_mean_pos - torch.logsumexp(logits, 1)).mean()
    assert ours.item() == pytest.approx(khosla_in.item() - n_pos.log().mean().item(), rel=1e-5)
    grad_ours = torch.autograd.grad(ours, [a, b], retain_graph=True)
    grad_khosla = torch.autograd.grad(khosla_in, [a, b])
    for g1, g2 in zip(grad_ours, grad_khosla, strict=True):
        torch.testing.assert_close(g1, g2)


def test_supcon__computes_in_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(32, 2, 64, generator=g), torch.randint(0, 4, (32,), generator=g)
    for form in ("in", "out"):
        exact = losses.supcon(feats.double(), labels, 0.2, form=form)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = losses.supcon(feats, labels, 0.2, form=form)
        assert under_autocast.dtype == torch.float32
        assert under_autocast.item() == pytest.approx(exact.item(), rel=1e-5)


def test_supcon__unknown_form_lists_the_valid_ones():
    with pytest.raises(ValueError, match="supcon form 'mean' is invalid; valid: in, out"):
        losses.supcon(torch.randn(4, 2, 3), torch.arange(4), 0.1, form="mean")


@pytest.mark.parametrize("form", ["in", "out"])
def test_supcon__anchor_without_positive_is_skipped_with_finite_gradients(form):
    feats = torch.randn(3, 1, 4, requires_grad=True)  # one view: a class seen once has no positive
    loss = losses.supcon(feats, torch.tensor([0, 0, 1]), 0.1, form=form)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_supcon__anchor_without_positive_is_skipped_not_nan():
    feats = torch.randn(3, 1, 4)  # one view: a class seen once has no positive
    loss = losses.supcon(feats, torch.tensor([0, 0, 1]), 0.1)
    assert torch.isfinite(loss)


def test_supcon__grouped_classes_score_lower_than_mixed_classes():
    labels = torch.tensor([0, 0, 1, 1])
    centres = torch.eye(4)[:2]
    grouped = centres[labels].unsqueeze(1).repeat(1, 2, 1) + 0.01 * torch.randn(4, 2, 4)
    mixed = centres[1 - labels].unsqueeze(1).repeat(1, 2, 1)
    mixed[:, 1] = centres[labels]  # each sample's two views sit on different class centres
    assert losses.supcon(grouped, labels, 0.1) < losses.supcon(mixed, labels, 0.1)


# --- byol / barlow --------------------------------------------------------------------------


def test_byol_loss__equals_two_minus_two_cosine():
    p, z = torch.tensor([[1.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    # cosines 0 and 1 -> per-sample losses 2 and 0
    assert losses.byol_loss(p, z).item() == pytest.approx(1.0, abs=1e-6)
    assert losses.byol_loss(-z, z).item() == pytest.approx(4.0, abs=1e-6)


def test_barlow_twins__matches_explicit_correlation_sums():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    a, b = z1.double().numpy(), z2.double().numpy()
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5)
    b = (b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5)
    on, off = 0.0, 0.0
    for i in range(4):
        for j in range(4):
            c_ij = sum(a[n, i] * b[n, j] for n in range(10)) / 10
            on, off = (on + (1 - c_ij) ** 2, off) if i == j else (on, off + c_ij**2)
    expected = 0.1 * (on + 0.0051 * off)
    assert losses.barlow_twins(z1, z2, scale=0.1).item() == pytest.approx(expected, rel=1e-5)


def test_barlow_twins__identical_views_score_lower_than_independent():
    z = torch.randn(64, 8)
    assert losses.barlow_twins(z, z) < losses.barlow_twins(z, torch.randn(64, 8))


# --- dino -----------------------------------------------------------------------------------


def test_dino_loss__single_pair_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.5, 0.0, 1.0]])
    center = torch.tensor([0.1, -0.1, 0.2])
    teacher = np.exp((t.numpy()[0] - center.numpy()) / 0.04)
    teacher /= teacher.sum()
    logits = s.numpy()[0] / 0.1
    log_student = logits - np.log(np.exp(logits).sum())
    expected = -(teacher * log_student).sum()
    got = losses.dino_loss(s, t, center, student_temp=0.1, teacher_temp=0.04)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_dino_loss__views_skip_same_view_pairs():
    g = torch.Generator().manual_seed(0)
    students = [torch.randn(4, 5, generator=g) for _ in range(3)]
    teachers = [torch.randn(4, 5, generator=g) for _ in range(2)]
    center = torch.zeros(5)
    pairs = [(a, b) for a in range(2) for b in range(3) if a != b]
    expected = sum(losses.dino_loss(students[b], teachers[a], center) for a, b in pairs) / 4
    torch.testing.assert_close(losses.dino_loss(students, teachers, center), expected)


def test_dino_loss__teacher_gets_no_gradient():
    s, t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    losses.dino_loss(s, t, torch.zeros(5)).backward()
    assert t.grad is None and torch.isfinite(s.grad).all()


def test_update_center__is_an_ema_of_the_batch_mean():
    center = torch.tensor([1.0, 0.0])
    views = [torch.tensor([[2.0, 2.0], [4.0, 0.0]]), torch.tensor([[0.0, 2.0], [2.0, 0.0]])]
    new = losses.update_center(center, losses.teacher_mean(views), momentum=0.9)
    torch.testing.assert_close(new, torch.tensor([0.9 + 0.1 * 2.0, 0.1 * 1.0]))
    assert center.tolist() == [1.0, 0.0]  # input untouched


# --- all losses -----------------------------------------------------------------------------

_CASES = {
    "info_nce": lambda a, b: losses.info_nce(F.normalize(a, dim=1), F.normalize(b, dim=1), None),
    "moco_v3_loss": lambda a, b: losses.moco_v3_loss(a, b.flip(0), b.detach(), a.detach().flip(0)),
    "nt_xent": lambda a, b: losses.nt_xent(a, b),
    "supcon": lambda a, b: losses.supcon([a, b], torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])),
    "supcon_in": lambda a, b: losses.supcon([a, b], torch.tensor([0, 1, 0, 1, 2, 2, 3, 3]), form="in"),
    "byol_loss": lambda a, b: losses.byol_loss(a, b),
    "barlow_twins": lambda a, b: losses.barlow_twins(a, b),
    "dino_loss": lambda a, b: losses.dino_loss(a, b, torch.zeros(16)),
    "cross_entropy": lambda a, b: losses.cross_entropy(a, torch.arange(8)),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_losses__scalar_with_finite_gradients(name):
    a = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, 16, requires_grad=True)
    loss = _CASES[name](a, b)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_info_nce__computes_in_fp32_under_bf16_autocast():
    # Under autocast the queue matmul would run in bf16 (~3 significant digits) while the
    # positive's elementwise product stays fp32: the logits must be fp32 throughout.
    g = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 32, generator=g), dim=1) for n in (16, 16, 256))
    exact = losses.info_nce(q.double(), k.double(), queue.double(), 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = losses.info_nce(q, k, queue, 0.1)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(exact.item(), rel=1e-5)


def _near_converged(batch: int, dim: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views' projections, the second the first plus a little noise (a late-training batch)."""
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(batch, dim, generator=g)
    return z1, z1 + noise * torch.randn(batch, dim, generator=g)


def _barlow_fp64(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> float:
    """Barlow Twins in fp64, the off-diagonal term summed over a mask (not as a difference of sums)."""
    a, b = ((z - z.mean(0)) / (z.var(0, unbiased=False) + eps).sqrt() for z in (z1.double(), z2.double()))
    c = a.T @ b / a.shape[0]
    off = ~torch.eye(c.shape[0], dtype=torch.bool)
    return float(((c.diagonal() - 1) ** 2).sum() + lambd * (c[off] ** 2).sum())


def test_barlow_twins__computes_in_fp32_under_bf16_autocast():
    # CPU autocast keeps pow and sum in bf16 (CUDA's runs them in fp32): the off-diagonal term would
    # be a difference of two bf16 sums: 0.5% off fp64 here, 0.6% at B 256, D 2048 (measured).
    z1, z2 = _near_converged(64, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = losses.barlow_twins(z1, z2)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(_barlow_fp64(z1, z2), rel=1e-5)


def test_nt_xent__computes_in_fp32_under_bf16_autocast():
    # A bf16 similarity matmul gives ~3 significant digits; supcon with instance labels (fp32 inside)
    # is nt_xent, so both must hold to an fp64 reference under autocast.
    z1, z2 = _near_converged(24, 64)
    exact = _naive_nt_xent(z1.double().numpy(), z2.double().numpy(), 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = losses.nt_xent(z1, z2, 0.2)
        supcon = losses.supcon([z1, z2], torch.arange(24), 0.2)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(exact, rel=1e-5)
    assert supcon.item() == pytest.approx(exact, rel=1e-5)
