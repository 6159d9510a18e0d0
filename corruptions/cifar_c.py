"""CIFAR-10-C corruptions (Hendrycks & Dietterich 2019): defocus blur, shot noise, JPEG.

Severities 1..5 use the CIFAR-10-C constants (the study hard-codes severity 3, docs/study.md
§1.1); severity 0 is declared as the identity so every kind has an identity setting.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
import torchvision.io
from torch import Tensor

from corruptions.base import Corruption, register_corruption
from corruptions.common import check_severity, from_unit_float, to_unit_float

# CIFAR-10-C's make_cifar_c.py constants, index = severity - 1.
DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # (disk radius, alias blur)
SHOT = (500, 250, 100, 75, 50)  # photons per unit intensity
JPEG_QUALITY = (80, 65, 58, 50, 40)


class _Severity(Corruption):
    severity: int
    main_param = "severity"
    family = "common"  # CIFAR-10-C's common corruptions (docs/study.md §1.1)

    def __post_init__(self) -> None:
        check_severity(self, self.severity)

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption:
        return cls(severity=0)


@functools.lru_cache(maxsize=8)
def defocus_kernel(radius: float, alias_blur: float) -> Tensor:
    """CIFAR-10-C's defocus kernel: a normalised disk on a 17x17 grid smoothed by a 3x3 Gaussian.

    Returns:
        (k, k) float32, cropped to its non-zero support (k odd), sums to 1.
    """
    coords = torch.arange(-8, 9, dtype=torch.float64)
    disk = ((coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2) <= radius**2).double()
    disk /= disk.sum()
    # cv2.GaussianBlur(ksize=3, sigma): separable taps exp(-x^2 / 2 sigma^2), normalised.
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * alias_blur**2))
    taps /= taps.sum()
    g = (taps.view(-1, 1) * taps.view(1, -1)).view(1, 1, 3, 3)
    kernel = F.conv2d(F.pad(disk.view(1, 1, 17, 17), (1, 1, 1, 1), mode="reflect"), g)[0, 0]
    support = kernel.abs() > 1e-12
    half = int(max(abs(i - 8) for i in torch.nonzero(support).flatten().tolist()))
    return kernel[8 - half : 9 + half, 8 - half : 9 + half].float()


@register_corruption
@dataclasses.dataclass(frozen=True)
class DefocusBlur(_Severity):
    """``defocusblur_<s>``: per-channel correlation with the defocus kernel, reflect-101 borders."""

    severity: int
    spec_names = {"defocusblur": {}}
    examples = ("defocusblur_3", "defocusblur_5")

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.severity == 0:
            return images
        kernel = defocus_kernel(*DEFOCUS[self.severity - 1]).to(images.device)
        k, c = kernel.shape[0], images.shape[1]
        x = to_unit_float(images)
        weight = kernel.to(x.dtype).expand(c, 1, k, k)
        padded = F.pad(x, (k // 2,) * 4, mode="reflect")  # torch 'reflect' == cv2 BORDER_REFLECT_101
        return from_unit_float(F.conv2d(padded, weight, groups=c), images)


@register_corruption
@dataclasses.dataclass(frozen=True)
class ShotNoise(_Severity):
    """``shotnoise_<s>``: ``clip(poisson(x * c) / c, 0, 1)``, fresh noise on every call."""

    severity: int
    spec_names = {"shotnoise": {}}
    examples = ("shotnoise_3",)

    @property
    def fixed(self) -> bool:
        return self.severity == 0

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.severity == 0:
            return images
        c = SHOT[self.severity - 1]
        x = to_unit_float(images).float()
        # torch.poisson draws from a CPU generator on CPU tensors only.
        noisy = torch.poisson(x.cpu() * c, generator=generator).to(images.device) / c
        return from_unit_float(noisy, images)


@register_corruption
@dataclasses.dataclass(frozen=True)
class Jpeg(_Severity):
    """``jpeg_<s>``: encode and decode with libjpeg at CIFAR-10-C's quality (58 at severity 3).

    NOTE: CIFAR-10-C saves through PIL; torchvision.io wraps the same libjpeg(-turbo) with 4:2:0
    chroma subsampling, so outputs match PIL's to within a few grey levels, not bit for bit.
    """

    severity: int
    spec_names = {"jpeg": {}}
    examples = ("jpeg_3",)

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.severity == 0:
            return images
        quality = JPEG_QUALITY[self.severity - 1]
        as_uint8 = images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)
        cpu = list(as_uint8.cpu().contiguous())
        encoded = torchvision.io.encode_jpeg(cpu, quality=quality)
        decoded = torchvision.io.decode_jpeg(encoded, mode=_mode(images.shape[1]))
        out = torch.stack(decoded).to(images.device)
        return out if images.dtype == torch.uint8 else (out.float() / 255).to(images.dtype)


def _mode(channels: int) -> torchvision.io.ImageReadMode:
    return torchvision.io.ImageReadMode.RGB if channels == 3 else torchvision.io.ImageReadMode.GRAY
