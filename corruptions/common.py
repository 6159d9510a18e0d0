"""Shared checks and dtype round trips for the CIFAR-10-C corruptions."""

from __future__ import annotations

from torch import Tensor

from corruptions.base import Corruption, CorruptionError

SEVERITIES = (0, 1, 2, 3, 4, 5)


def check_severity(corruption: Corruption, severity: int) -> None:
    """Severity 1..5 are CIFAR-10-C's levels; 0 is declared as the identity."""
    if severity not in SEVERITIES:
        raise CorruptionError(
            f"corruption {corruption.spec_name}_{severity}: severity {severity} is invalid; valid: 0 (identity), 1, 2, 3, 4, 5"
        )


def to_unit_float(images: Tensor) -> Tensor:
    """(B, C, H, W) uint8 or float -> float32 in [0, 1] (float input passes through)."""
    return images.float() / 255 if not images.is_floating_point() else images


def from_unit_float(result: Tensor, like: Tensor) -> Tensor:
    """Back to ``like``'s dtype. uint8 truncates after clipping, as ``np.uint8(clip(x)*255)``."""
    result = result.clamp(0, 1)
    if like.is_floating_point():
        return result.to(like.dtype)
    # A tiny epsilon keeps values that are exact integers in float64 (k/255*255) from
    # truncating to k-1 through float32 rounding.
    return (result * 255 + 1e-4).floor().clamp(0, 255).to(like.dtype)
