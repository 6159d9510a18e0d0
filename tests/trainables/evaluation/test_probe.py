"""Linear probe: separable data, agreement with scikit-learn, inference-mode inputs."""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression

from trainables.evaluation import linear_probe


def _gaussians(n: int, noise: float, seed: int, dim: int = 64, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + noise * torch.randn(n, dim, generator=g), labels


def test_linear_probe__separable_data_is_classified_perfectly():
    train, train_labels = _gaussians(1000, noise=0.3, seed=0)
    test, test_labels = _gaussians(500, noise=0.3, seed=1)
    out = linear_probe(train, train_labels, test, test_labels, num_classes=5)
    assert out["acc"] == 100.0
    assert out["logits"].shape == (500, 5)


def test_linear_probe__close_to_sklearn_logistic_regression_on_hard_data():
    train, train_labels = _gaussians(2000, noise=3.0, seed=2)
    test, test_labels = _gaussians(1000, noise=3.0, seed=3)
    ours = linear_probe(train, train_labels, test, test_labels, 5, weight_decay=1e-3)["acc"]
    mean, std = train.mean(dim=0), train.std(dim=0)
    # sklearn minimises sum CE + ||W||^2 / (2 C); ours mean CE + wd/2 ||W||^2 -> C = 1/(wd N)
    clf = LogisticRegression(C=1 / (1e-3 * 2000), max_iter=2000)
    clf.fit(((train - mean) / std).numpy(), train_labels.numpy())
    theirs = 100 * (clf.predict(((test - mean) / std).numpy()) == test_labels.numpy()).mean()
    assert 30.0 < theirs < 95.0  # the set is genuinely hard
    assert abs(ours - theirs) <= 2.0


def test_linear_probe__accepts_features_cached_under_inference_mode():
    with torch.inference_mode():
        train, train_labels = _gaussians(200, noise=0.3, seed=4)
        out = linear_probe(train, train_labels, train, train_labels, num_classes=5)
    assert out["acc"] == 100.0 and out["train_acc"] == 100.0
