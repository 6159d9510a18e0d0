"""ECE against a hand-binned example and basic invariants."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.evaluation import expected_calibration_error


def _logits_with_confidence(confidence: float, predicted: int, classes: int = 2) -> list[float]:
    """Logits whose softmax puts ``confidence`` on ``predicted`` and the rest evenly."""
    rest = (1 - confidence) / (classes - 1)
    return [math.log(confidence if c == predicted else rest) for c in range(classes)]


def test_expected_calibration_error__four_predictions_hand_binned():
    # 15 bins of width 1/15. Confidences 0.95, 0.97 fall in (14/15, 1]; 0.55 in (8/15, 9/15];
    # 0.75 in (11/15, 12/15].
    logits = torch.tensor(
        [
            _logits_with_confidence(0.95, 0),  # correct
            _logits_with_confidence(0.97, 1),  # wrong
            _logits_with_confidence(0.55, 0),  # correct
            _logits_with_confidence(0.75, 1),  # wrong
        ]
    )
    labels = torch.tensor([0, 0, 0, 0])
    top_bin = 2 / 4 * abs(0.5 - (0.95 + 0.97) / 2)
    expected = top_bin + 1 / 4 * abs(1 - 0.55) + 1 / 4 * abs(0 - 0.75)
    got = expected_calibration_error(logits, labels, n_bins=15)
    assert got == pytest.approx(expected, abs=1e-6)


def test_expected_calibration_error__bins_are_closed_on_the_right():
    # Two bins, (0, 0.5] and (0.5, 1]. Confidence exactly 0.5 (a two-way tie, exact in float)
    # shares the lower bin with 0.3: accuracy 1/2 vs confidence 0.4 -> 0.1. With [lo, hi) bins
    # it would sit alone in the upper bin: 0.5 * 0.5 + 0.5 * 0.3 = 0.4.
    inf = float("inf")
    logits = torch.tensor([[0.0, 0.0, -inf, -inf], [0.3, 0.25, 0.25, 0.2]])
    logits[1] = logits[1].log()
    labels = torch.tensor([0, 1])  # first correct (tie resolves to class 0), second wrong
    assert expected_calibration_error(logits, labels, n_bins=2) == pytest.approx(0.1, abs=1e-6)


def test_expected_calibration_error__perfectly_confident_and_right_is_zero():
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert expected_calibration_error(logits, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(logits, torch.tensor([1, 0])) == pytest.approx(1.0, abs=1e-6)
