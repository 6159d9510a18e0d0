"""Weighted kNN against scikit-learn's brute-force classifier with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from trainables.evaluation import knn_accuracy, knn_predict, knn_scores
from trainables.evaluation.knn import _grouped_topk

T = 0.1


def _clustered(n: int, seed: int, dim: int = 32, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + 1.2 * torch.randn(n, dim, generator=g), labels


def _sklearn(distance: str, k: int) -> KNeighborsClassifier:
    if distance == "cosine":  # sklearn's cosine distance is 1 - similarity
        weights = lambda d: np.exp((1 - d) / T)  # noqa: E731
    else:
        weights = lambda d: 1 / (d + 1e-5)  # noqa: E731
    return KNeighborsClassifier(k, algorithm="brute", metric=distance, weights=weights)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 15, 200])
def test_knn_predict__matches_sklearn(distance, k):
    # 1001 train rows: not a multiple of the top-k group, so padding is exercised too
    train, train_labels = _clustered(1001, seed=0)
    test, _ = _clustered(300, seed=1)
    ours = knn_predict(train, train_labels, test, 5, k=k, temperature=T, distance=distance, chunk_size=64)
    clf = _sklearn(distance, k).fit(train.double().numpy(), train_labels.numpy())
    theirs = clf.predict(test.double().numpy())
    assert (ours.numpy() == theirs).mean() == 1.0


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_knn_scores__equal_sklearn_predict_proba(distance):
    train, train_labels = _clustered(900, seed=2)
    test, _ = _clustered(100, seed=3)
    ours = knn_scores(train, train_labels, test, 5, k=50, temperature=T, distance=distance)
    clf = _sklearn(distance, 50).fit(train.double().numpy(), train_labels.numpy())
    np.testing.assert_allclose(ours.numpy(), clf.predict_proba(test.double().numpy()), atol=1e-5)


def test_knn_scores__chunking_does_not_change_the_result():
    train, train_labels = _clustered(500, seed=4)
    test, _ = _clustered(77, seed=5)
    whole = knn_scores(train, train_labels, test, 5, k=20)
    chunked = knn_scores(train, train_labels, test, 5, k=20, chunk_size=10)
    torch.testing.assert_close(whole, chunked)


def test_knn_scores__tiny_temperature_does_not_overflow():
    train, train_labels = _clustered(300, seed=6)
    scores = knn_scores(train, train_labels, train[:10], 5, k=20, temperature=0.01)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(10))


def test_knn_accuracy__percent_and_k_clipped_to_bank():
    train, train_labels = _clustered(50, seed=7)
    # each training point is its own nearest neighbour
    assert knn_accuracy(train, train_labels, train, train_labels, 5, k=1) == 100.0
    assert 0.0 <= knn_accuracy(train, train_labels, train, train_labels, 5, k=500) <= 100.0


@pytest.mark.parametrize("width", [800, 3200, 4 * 4 * 4 * 50])
def test_grouped_topk__same_values_as_full_topk(width):
    sim = torch.randn(37, width, generator=torch.Generator().manual_seed(width))
    values, index = _grouped_topk(sim, 50)
    expected = sim.topk(50, dim=1).values
    torch.testing.assert_close(values.sort(dim=1, descending=True).values, expected)
    torch.testing.assert_close(sim.gather(1, index), values)
