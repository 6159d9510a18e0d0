"""Pixel-level corruptions: the identity (``ori``) and gamma distortion."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import Tensor

from corruptions.base import Corruption, CorruptionError, register_corruption


@register_corruption
@dataclasses.dataclass(frozen=True)
class Original(Corruption):
    """``ori``: the clean images (the study's baseline)."""

    spec_names = {"ori": {}}
    examples = ("ori",)
    family = "clean"

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption:
        return cls()

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return images


@functools.lru_cache(maxsize=32)
def _gamma_lut(gamma: float) -> Tensor:
    """(256,) uint8 table of the study's formula, computed in float64 as numpy does."""
    x = np.arange(256, dtype=np.uint8)
    return torch.from_numpy((255 * (x / 255) ** gamma).astype(np.uint8))


@register_corruption
@dataclasses.dataclass(frozen=True)
class Gamma(Corruption):
    """``gam_<g>``: gamma distortion ``uint8(255 * (x/255) ** gamma)`` (truncates, as the study).

    uint8 input goes through a 256-entry table of exactly that numpy expression; float input in
    [0, 1] gets the continuous ``x ** gamma`` (the formula before its uint8 truncation).
    ``gam_1`` is the identity.
    """

    gamma: float

    spec_names = {"gam": {}}
    examples = ("gam_0.2", "gam_2.5")
    main_param = "gamma"
    family = "gamma"

    def __post_init__(self) -> None:
        if not (self.gamma > 0 and np.isfinite(self.gamma)):
            raise CorruptionError(
                f"corruption 'gam_{self.gamma:g}': gamma {self.gamma:g} is invalid; valid: any finite gamma > 0 (the study uses 0.1, 0.2, 2.5, 5)"
            )

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption:
        return cls(gamma=1.0)

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        if images.dtype == torch.uint8:
            lut = _gamma_lut(self.gamma)
            if images.device.type == "cpu":  # numpy indexes with uint8 directly: no int64 copy
                return torch.from_numpy(np.take(lut.numpy(), images.numpy()))
            return lut.to(images.device)[images.long()]
        return images.clamp(0, 1) ** self.gamma
