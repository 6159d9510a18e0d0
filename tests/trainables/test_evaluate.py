"""trainables.evaluate: the per-epoch metrics, including the study's own kNN beside ours."""

from __future__ import annotations

import pytest
import torch

from trainables.config import EvalConfig
from trainables.evaluate import epoch_metrics


def _naive_study_knn(bank: torch.Tensor, bank_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int) -> float:
    """solo-learn's WeightedKNNClassifier, euclidean: k nearest by L2 distance on raw features,
    each voting 1 / (d + 1e-5) for its class; the largest class total wins."""
    correct = 0
    for x, y in zip(test.double(), test_y, strict=True):
        d = (bank.double() - x).norm(dim=1)
        near = d.argsort()[:k]
        votes = torch.zeros(int(bank_y.max()) + 1, dtype=torch.float64).index_add_(0, bank_y[near], 1 / (d[near] + 1e-5))
        correct += int(votes.argmax() == y)
    return 100 * correct / len(test_y)


def test_epoch_metrics__reports_the_studys_euclidean_knn_beside_ours():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    bank_y, test_y = torch.arange(4).repeat(60), torch.arange(4).repeat(15)
    # unnormalised features whose norms vary: cosine and euclidean neighbours then differ
    scale = lambda n: torch.rand(n, 1, generator=g) * 4 + 0.2  # noqa: E731
    bank = (centres[bank_y] + torch.randn(240, 16, generator=g) * 2.5) * scale(240)
    test = (centres[test_y] + torch.randn(60, 16, generator=g) * 2.5) * scale(60)
    m = epoch_metrics((bank, bank_y), (test, test_y), 4, EvalConfig(knn_k=20, knn_distance="cosine"))
    assert m["knn_acc_study"] == pytest.approx(_naive_study_knn(bank, bank_y, test, test_y, k=200))
    assert m["knn_acc"] != m["knn_acc_study"]  # ours (cosine, k 20) is another protocol
