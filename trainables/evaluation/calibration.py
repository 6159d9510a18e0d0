"""Expected calibration error of a classifier's top-1 softmax confidence."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expected_calibration_error"]


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """L1 ECE with equal-width confidence bins, as the study's torchmetrics metric.

    Matches ``torchmetrics.CalibrationError(task="multiclass", n_bins=15, norm="l1")``: the
    confidence is the top-1 softmax probability, bins are ``(lo, hi]`` on
    ``linspace(0, 1, n_bins + 1)``, and::

        ECE = sum_b (n_b / M) * | accuracy_b - mean confidence_b |

    Returned as a fraction in [0, 1]; the paper's Table C.1 reports it x100.

    NOTE: torchmetrics skips the softmax when every input already lies in [0, 1] (it takes them
    for probabilities); here ``logits`` are always passed through softmax.

    Args:
        logits: (M, C) float, unnormalised class scores.
        labels: (M,) int64 in [0, C).
        n_bins: number of equal-width bins over [0, 1].

    Returns:
        The ECE in [0, 1].
    """
    # float32 confidences and bin edges, as torchmetrics, so edge cases land in the same bin.
    confidence, prediction = logits.float().softmax(dim=1).max(dim=1)
    correct = (prediction == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, device=logits.device)
    # bucketize(right=False) gives i with edges[i-1] < c <= edges[i]: bins are (lo, hi].
    bins = (torch.bucketize(confidence, edges) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64, device=logits.device)
    count.index_add_(0, bins, torch.ones_like(correct))
    gap = torch.zeros_like(count)
    # sum over a bin of (correct - confidence) = n_b * (accuracy_b - mean confidence_b)
    gap.index_add_(0, bins, correct - confidence.double())
    return (gap.abs().sum() / count.sum()).item()
