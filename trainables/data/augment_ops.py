"""Batched image ops behind the augmentation recipes: every op takes per-sample parameters.

Each function maps a batch ``(B, C, H, W)`` float in [0, 1] plus per-sample parameter tensors
to the same layout; sampling those parameters is the recipes' job (``augment.py``). Split
out so each op can be replayed against torchvision's per-image functional ops in tests.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

# NOTE: ITU-R 601-2 luma is 0.299/0.587/0.114 (PIL); torchvision's tensor kernels use
# 0.2989 for red, and we match those kernels so the reference tests can be tight.

# NOTE: ITU-R 601-2 luma is 0.299/0.587/0.114 (PIL); torchvision's tensor kernels use
# 0.2989 for red, and we match those kernels so the reference tests can be tight.
LUMA = (0.2989, 0.587, 0.114)
CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop tries 10 boxes before its fallback
SOLARIZE_THRESHOLD = 0.5  # on the [0, 1] scale (128 / 255 in the BYOL paper)
BLUR_SIGMA = (0.1, 2.0)  # SimCLR / BYOL Gaussian blur sigma range, in pixels


def constant(values, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once per (values, dtype, device):
    on a GPU each ``torch.tensor`` of a list is a host copy that waits for the queued kernels.
    Callers must not modify it in place."""
    return _constant(_frozen(values), dtype, torch.device(device))


@functools.lru_cache(maxsize=128)
def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _frozen(values):
    return tuple(_frozen(v) for v in values) if isinstance(values, (list, tuple)) else values


def move_to(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory without blocking,
    so the copy does not wait for the kernels already queued (a pageable copy does). Same values."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _rand(shape: tuple[int, ...], generator: Generator, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _out_size(size: int | None, height: int, width: int) -> tuple[int, int]:
    return (height, width) if size is None else (size, size)


def _center_fallback(height: int, width: int, ratio: tuple[float, float]) -> list[int]:
    """torchvision's box when all attempts fail: the largest centred box within ``ratio``."""
    in_ratio = width / height
    h, w = height, width
    if in_ratio < min(ratio):
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        w = round(h * max(ratio))
    return [(height - h) // 2, (width - w) // 2, h, w]


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: Generator,
) -> Tensor:
    """RandomResizedCrop boxes as torchvision's ``get_params``, vectorised over the batch.

    Area fraction uniform in ``scale``, log-uniform aspect ratio in ``ratio``, the first of
    10 valid attempts (all drawn at once instead of in a loop), else a centred fallback.

    Returns:
        (B, 4) int64 boxes ``(top, left, height, width)`` on ``generator.device``.
    """
    u = _rand((batch, CROP_ATTEMPTS, 4), generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    # torch.round and Python's round both round half to even.
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    top = (u[..., 2].gather(1, first)[:, 0] * (height - h + 1)).floor().long()
    left = (u[..., 3].gather(1, first)[:, 0] * (width - w + 1)).floor().long()
    boxes = torch.stack([top, left, h, w], dim=1)
    fallback = torch.tensor(_center_fallback(height, width, ratio), device=boxes.device)
    return torch.where(valid.any(dim=1, keepdim=True), boxes, fallback)


def _axis_coords(start: Tensor, length: Tensor, size: int, flip: Tensor | None) -> Tensor:
    """(B, size) source pixel coordinates of a bilinear resize of ``[start, start + length)``.

    Same formula as ``F.interpolate(align_corners=False)``, including its clamp of the
    source coordinate to the outer pixel centres of the (cropped) input.
    """
    pos = torch.arange(size, dtype=start.dtype, device=start.device).expand(len(start), size)
    if flip is not None:
        pos = torch.where(flip[:, None], size - 1 - pos, pos)
    src = start[:, None] + (pos + 0.5) * (length[:, None] / size) - 0.5
    return torch.minimum(torch.maximum(src, start[:, None]), (start + length - 1)[:, None])


def resized_crop_flip(images: Tensor, boxes: Tensor, flip: Tensor, size: tuple[int, int]) -> Tensor:
    """Crops each box, resizes it bilinearly to ``size`` and mirrors flagged samples.

    One sampling grid per sample, one ``grid_sample`` for the batch. NOTE: the grid is
    built from per-axis coordinates, not ``F.affine_grid``: the map is axis-aligned, so
    it is the same grid, and clamping it to the box (as torchvision's ``resized_crop``
    does) on (B, S) axes is 3x faster on CPU than on the (B, S, S, 2) grid.

    Args:
        images: (B, C, H, W) float.
        boxes: (B, 4) int ``(top, left, height, width)``.
        flip: (B,) bool, mirror left-right.
        size: output ``(height, width)``.

    Returns:
        (B, C, *size) float, same dtype and device as ``images``.
    """
    height, width = images.shape[2:]
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    rows = _axis_coords(top, h, size[0], None)
    cols = _axis_coords(left, w, size[1], flip)
    # Pixel x has the normalised coordinate (2x + 1) / W - 1 when align_corners=False.
    gx, gy = (2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize(images: Tensor, side: int) -> Tensor:
    """``images: (B, C, H, W)`` float -> (B, C, side, side), bilinear (``align_corners=False``).

    Antialiased only when it shrinks an axis: there it low-passes as torchvision's ``Resize`` does
    (``antialias=True``); an upsampling (32 -> 224, the downstream setting) is plain bilinear, which
    torchvision's tensor ``Resize`` also is there. Unchanged (the same tensor) when already that size.
    """
    if tuple(images.shape[-2:]) == (side, side):
        return images
    shrinks = side < images.shape[-2] or side < images.shape[-1]
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=shrinks)


def hue_rotation(hue: Tensor) -> Tensor:
    """(B, 3, 3) RGB matrices rotating colours about the grey axis by ``2 pi hue: (B,)``.

    NOTE: torchvision's ``adjust_hue`` shifts hue in HSV, which is not linear. This
    rotation is exact for pure hues at multiples of 1/3 and, on CIFAR test images, about
    twice as close to ``adjust_hue`` as the classic YIQ rotation (mean abs error 0.016 vs
    0.027 at hue 0.1; 0.0025 at 0.01). Exact HSV would cost ~4x this whole recipe on CPU.
    """
    angle = 2 * math.pi * hue
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    eye = torch.eye(3, dtype=hue.dtype, device=hue.device)
    ones = torch.full((3, 3), 1 / 3, dtype=hue.dtype, device=hue.device)
    cross = constant([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], hue.dtype, hue.device)
    # Rodrigues' formula with the unit axis (1, 1, 1) / sqrt(3).
    return cos * eye + (1 - cos) * ones + sin * cross / math.sqrt(3)


def jitter_matrices(factors: Tensor) -> Tensor:
    """(B, 4, 3, 3) RGB matrices of brightness, contrast, saturation and hue per sample.

    ``factors`` is (B, 4) in that order. Contrast also needs the offset
    ``(1 - c) * mean_grey`` of the image as it is then; ``color_jitter`` adds it.
    """
    b, c, s, h = factors.unbind(1)
    eye = torch.eye(3, dtype=factors.dtype, device=factors.device)
    luma = constant(LUMA, factors.dtype, factors.device).expand(3, 3)
    bright, contrast = b[:, None, None] * eye, c[:, None, None] * eye
    # Saturation blends with the grey image: s * x + (1 - s) * luma . x
    saturation = s[:, None, None] * eye + (1 - s)[:, None, None] * luma
    return torch.stack([bright, contrast, saturation, hue_rotation(h)], dim=1)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """ColorJitter with per-sample factors and a per-sample random order of the four ops.

    Each op is a per-sample 3x3 matrix (plus an offset for contrast) and a clamp to [0, 1],
    as torchvision clamps after each op; so each step is one batched matmul whatever op a
    sample is at, and torchvision's random order costs nothing extra.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        factors: (B, 4) ``(brightness, contrast, saturation, hue)`` factors.
        order: (B, 4) int64, a permutation of 0..3 per sample (0 brightness .. 3 hue).
        apply: (B,) bool, samples left unchanged where False.

    Returns:
        (B, 3, H, W) float in [0, 1].
    """
    batch = images.shape[0]
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    mats = torch.where(apply[:, None, None, None], jitter_matrices(factors), eye)
    contrast_weight = torch.where(apply, 1 - factors[:, 1], 0.0)
    luma = constant(LUMA, images.dtype, images.device)
    rows = torch.arange(batch, device=images.device)
    x = images.flatten(2)  # (B, 3, H*W)
    for step in range(4):
        op = order[:, step]
        # Contrast blends with the mean grey level of the image as it is at this step.
        offset = torch.where(op == 1, contrast_weight * (x.mean(2) @ luma), 0.0)
        x = torch.baddbmm(offset[:, None, None], mats[rows, op], x).clamp_(0.0, 1.0)
    return x.view_as(images)


def grayscale(images: Tensor, mask: Tensor) -> Tensor:
    """Replaces flagged samples of ``images: (B, 3, H, W)`` by their luma in all 3 channels."""
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    luma = constant(LUMA, images.dtype, images.device).expand(3, 3)
    # One batched 3x3 matmul (identity for unflagged samples) beats a masked torch.where.
    mats = torch.where(mask[:, None, None], luma, eye)
    return torch.bmm(mats, images.flatten(2)).view_as(images)


def gaussian_blur(images: Tensor, sigma: Tensor, mask: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur of ``images: (B, C, H, W)`` as torchvision's, per-sample sigma.

    ``sigma: (B,)`` is in pixels; samples where ``mask: (B,)`` is False get a delta kernel,
    i.e. stay unchanged. ``kernel_size`` is odd; padding reflects, as in torchvision.
    """
    batch, channels, height, width = images.shape
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    delta = (offsets == 0).to(images.dtype)
    kernel = torch.where(mask[:, None], kernel / kernel.sum(1, keepdim=True), delta)
    kernel = kernel.repeat_interleave(channels, dim=0)[:, None, None]  # (B*C, 1, 1, K)
    # Grouped conv over (1, B*C, H, W): one filter per (sample, channel).
    x = F.pad(images, [half] * 4, mode="reflect")
    x = x.reshape(1, batch * channels, height + 2 * half, width + 2 * half)
    x = F.conv2d(x, kernel, groups=batch * channels)
    x = F.conv2d(x, kernel.transpose(2, 3), groups=batch * channels)
    return x.view(batch, channels, height, width)


def blur_kernel_size(side: int) -> int:
    """About 10% of the image side, odd and at least 3 (SimCLR's 23 px at 224 px)."""
    return max(3, int(0.1 * side) // 2 * 2 + 1)


def solarize(images: Tensor, mask: Tensor, threshold: float = SOLARIZE_THRESHOLD) -> Tensor:
    """Inverts pixels at or above ``threshold`` in flagged samples (torchvision's rule)."""
    # A per-sample threshold (inf = never) is cheaper than and-ing two full-size masks.
    per_sample = torch.where(mask, threshold, math.inf).to(images.dtype)[:, None, None, None]
    return torch.where(images >= per_sample, 1.0 - images, images)
