"""Uniformity, class-wise uniformity, class distance matrix and alignment on hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.evaluation import (
    alignment,
    classwise_uniformity,
    feature_distance_matrix,
    features,
    geometry_scalars,
    uniformity,
)


def _clustered(n: int = 60, dim: int = 8, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=g)
    return centres[labels] + 0.5 * torch.randn(n, dim, generator=g), labels


def test_uniformity__two_antipodal_points():
    # ||a - b||^2 = 4 -> -log exp(-2 * 4) = 8
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(x) == pytest.approx(8.0, rel=1e-6)


def test_uniformity__three_points_hand_computed_and_scale_free():
    # unit vectors e1, e2 and e1 (after normalising 5*e1): squared distances 2, 0, 2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    expected = -math.log((math.exp(-4) + 1 + math.exp(-4)) / 3)
    assert uniformity(x) == pytest.approx(expected, rel=1e-6)


def test_uniformity__blocked_equals_pdist_reference():
    x = torch.randn(203, 16, generator=torch.Generator().manual_seed(0))
    z = F.normalize(x.double(), dim=1)
    expected = -torch.pdist(z).pow(2).mul(-2).exp().mean().log().item()
    for rows in (1, 7, 64, None):
        assert uniformity(x, block_rows=rows) == pytest.approx(expected, rel=1e-5)


def test_uniformity__fewer_than_two_points_is_nan():
    assert math.isnan(uniformity(torch.randn(1, 4)))


def test_classwise_uniformity__matches_per_class_subsets_and_nan_for_singletons():
    x, labels = _clustered()
    labels[0] = 3  # class 3 has a single sample; class 4 has none
    got = classwise_uniformity(x, labels, num_classes=5)
    for c in range(3):
        assert got[c].item() == pytest.approx(uniformity(x[labels == c]), rel=1e-9)
    assert math.isnan(got[3]) and math.isnan(got[4])


def test_feature_distance_matrix__matches_brute_force_pairs():
    x, labels = _clustered(n=31)
    z = F.normalize(x.double(), dim=1)
    got = feature_distance_matrix(x, labels, num_classes=3)
    for i in range(3):
        for j in range(3):
            dists = [
                (z[a] - z[b]).pow(2).sum().item()
                for a in range(31)
                for b in range(31)
                if labels[a] == i and labels[b] == j and a != b
            ]
            assert got[i, j].item() == pytest.approx(sum(dists) / len(dists), rel=1e-9)


def test_feature_distance_matrix__diagonal_excludes_self_pairs():
    # class 0: e1, e2 -> only the distinct pair counts: 2 (with self pairs it would be 1)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    got = feature_distance_matrix(x, torch.tensor([0, 0, 1]), num_classes=3)
    assert got[0, 0].item() == pytest.approx(2.0)
    assert got[0, 1].item() == pytest.approx((4.0 + 2.0) / 2)
    assert math.isnan(got[1, 1]) and got[2].isnan().all()


def test_alignment__hand_computed():
    x1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x2 = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # distances 0 and sqrt(2)
    assert alignment(x1, x2) == pytest.approx(1.0, rel=1e-6)
    assert alignment(x1, x2, alpha=1) == pytest.approx(math.sqrt(2) / 2, rel=1e-6)


def test_geometry_scalars__hand_case_per_class_and_means_with_an_empty_class_left_out():
    # class 0: e1, e2; class 1: -e1, -e2; class 2 empty. Pair distances: 2 within, (4+2+2+4)/4 = 3 across.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    got = geometry_scalars(x, torch.tensor([0, 0, 1, 1]), num_classes=3)
    expected = {
        "classwise_uniformity/0": 4.0,
        "classwise_uniformity/1": 4.0,
        "intra_distance/0": 2.0,
        "intra_distance/1": 2.0,
        "inter_distance/0": 3.0,
        "inter_distance/1": 3.0,
        "classwise_uniformity_mean": 4.0,
        "intra_distance": 2.0,
        "inter_distance": 3.0,
    }
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected)


def test_geometry_scalars__above_the_per_class_limit_only_the_means(monkeypatch):
    x, labels = _clustered()
    monkeypatch.setattr(features, "PER_CLASS_LIMIT", 2)
    got = geometry_scalars(x, labels, num_classes=3)
    assert set(got) == {"classwise_uniformity_mean", "intra_distance", "inter_distance"}
    assert got["classwise_uniformity_mean"] == pytest.approx(classwise_uniformity(x, labels, 3).mean().item())
    assert got["intra_distance"] < got["inter_distance"]  # clustered data: classes are tighter than apart
