"""Linear probe: multinomial logistic regression on frozen, cached features.

The objective is convex, so instead of the study's 20 epochs of SGD we solve it to
convergence with full-batch L-BFGS: deterministic, no learning rate to tune, and about a
second for 10k x 512 features on 2 CPU cores.

NOTE: the study's offline probe (docs/study.md §2.3: SGD lr 0.3, wd 0, 20 epochs, bs 256) trains
on augmented crops through the frozen backbone; this probe sees one cached, un-augmented
feature per image and uses a small L2 penalty, so accuracies can differ by a point or so and
the probe's logits (hence ECE) are those of the converged optimum, not of 20 SGD epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["linear_probe"]


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> dict[str, float | Tensor]:
    """Fit ``softmax(W x + b)`` on standardised train features and score the test set.

    Loss: ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the bias is not penalised),
    the optimum SGD with ``weight_decay`` would approach. Features are standardised with the
    train set's per-dimension mean and std, so the penalty means the same for every backbone.

    Args:
        train_feats: (N, D) float, frozen features of the training set.
        train_labels: (N,) int64 in [0, num_classes).
        test_feats: (M, D) float, features of the evaluation set.
        test_labels: (M,) int64 in [0, num_classes).
        num_classes: C.
        weight_decay: L2 coefficient on W (>= 0).
        max_iter: L-BFGS iterations (each is one or a few full-batch passes).

    Returns:
        ``{"acc": test top-1 accuracy in percent [0, 100], "train_acc": same on the train set,
        "logits": (M, C) float32 test logits, detached}``.
    """
    # inference_mode(False): callers often cache features under inference_mode, and such
    # tensors cannot be saved for backward; standardising makes fresh, ordinary tensors.
    with torch.inference_mode(False), torch.enable_grad():
        mean = train_feats.float().mean(dim=0)
        std = train_feats.float().std(dim=0).clamp_min(1e-6)  # constant dims (dead ReLUs) stay 0
        x_train = (train_feats.float() - mean) / std
        x_test = (test_feats.float() - mean) / std
        labels = train_labels.clone()  # cross_entropy saves its target for backward too
        weight, bias = _fit(x_train, labels, num_classes, weight_decay, max_iter)
        with torch.no_grad():
            train_acc = _accuracy(x_train @ weight.T + bias, train_labels)
            logits = x_test @ weight.T + bias
    return {"acc": _accuracy(logits, test_labels), "train_acc": train_acc, "logits": logits}


def _fit(x: Tensor, labels: Tensor, num_classes: int, weight_decay: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Full-batch L-BFGS with a strong-Wolfe line search from zero weights; (C, D) and (C,)."""
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()
