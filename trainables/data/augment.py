"""Batched, per-sample-random augmentation on the training device.

Each recipe maps a whole batch ``(B, C, H, W)`` to one augmented view in a few batched
tensor ops, so it replaces a multi-worker PIL pipeline (airbench keeps CIFAR on the GPU
and never uses DataLoader workers). Every sample gets its own random parameters, and all
randomness comes from an explicit ``torch.Generator``: the same seed gives the same views
whatever the batch's device or the number of data workers.

Randomness is drawn on ``generator.device`` and the parameters are then moved to the
images' device. Use a CPU generator: the draws are tiny, and the views are then identical
on CPU and CUDA. The draws always have the same shapes whatever the probabilities, so
changing ``blur_p`` changes the blur flags but not the crops.

Sampling (``sample_*_params``) and applying (``apply_*``) are separate public functions,
so tests can replay torchvision's per-image ops with exactly the drawn parameters.

[0] He et al., 2020, Momentum Contrast (MoCo v2 recipe), https://arxiv.org/abs/2003.04297
[1] Grill et al., 2020, Bootstrap Your Own Latent, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

# NOTE: ITU-R 601-2 luma is 0.299/0.587/0.114 (PIL); torchvision's tensor kernels use
# 0.2989 for red, and we match those kernels so the reference tests can be tight.
LUMA = (0.2989, 0.587, 0.114)
CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop tries 10 boxes before its fallback
SOLARIZE_THRESHOLD = 0.5  # on the [0, 1] scale (128 / 255 in the BYOL paper)
BLUR_SIGMA = (0.1, 2.0)  # SimCLR / BYOL Gaussian blur sigma range, in pixels


class Augmentation(Protocol):
    """The contract every recipe follows (see ``SSLRecipe.__call__``)."""

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


# ----------------------------------------------------------------------------- helpers


def to_float(images: Tensor) -> Tensor:
    """Converts ``images: (B, C, H, W)`` uint8 in [0, 255] or float in [0, 1] to float32 [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.to(torch.float32)


def _check_batch(images: Tensor, channels: int | None = None) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"this recipe needs {channels} channels, got {images.shape[1]}")


def _rand(shape: tuple[int, ...], generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _out_size(size: int | None, height: int, width: int) -> tuple[int, int]:
    return (height, width) if size is None else (size, size)


# ----------------------------------------------------------------- crop, resize and flip


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
    generator: torch.Generator,
) -> Tensor:
    """Samples RandomResizedCrop boxes, vectorised over the batch and the attempts.

    Follows torchvision's ``RandomResizedCrop.get_params``: area fraction uniform in
    ``scale``, log-uniform aspect ratio in ``ratio``, first of 10 valid attempts, else a
    centred fallback. All 10 candidates are drawn at once instead of in a loop.

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


def resized_crop_flip(images: Tensor, boxes: Tensor, flip: Tensor, size: tuple[int, int]) -> Tensor:
    """Crops each box, resizes it bilinearly to ``size`` and mirrors flagged samples.

    One affine sampling grid per sample does crop, resize and flip in a single
    ``grid_sample``. The grid is clamped to the box's outer pixel centres, which is what
    ``F.interpolate`` (torchvision's ``resized_crop``, antialias off) does at the edges.

    Args:
        images: (B, C, H, W) float.
        boxes: (B, 4) int ``(top, left, height, width)``.
        flip: (B,) bool, mirror left-right.
        size: output ``(height, width)``.

    Returns:
        (B, C, *size) float, same dtype and device as ``images``.
    """
    batch, channels, height, width = images.shape
    top, left, h, w = boxes.to(images.dtype).unbind(1)
    # Normalised coordinates (align_corners=False): pixel x has centre (2x + 1) / W - 1.
    scale_x = torch.where(flip, -w / width, w / width)
    theta = torch.zeros(batch, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, (2 * left + w) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [batch, channels, *size], align_corners=False)
    low = torch.stack([(2 * left + 1) / width, (2 * top + 1) / height], dim=1) - 1
    high = torch.stack([(2 * (left + w) - 1) / width, (2 * (top + h) - 1) / height], dim=1) - 1
    grid = torch.maximum(torch.minimum(grid, high[:, None, None]), low[:, None, None])
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------- colour


def hue_rotation(hue: Tensor) -> Tensor:
    """Per-sample 3x3 RGB matrices that rotate colours about the grey axis.

    NOTE: torchvision's ``adjust_hue`` shifts hue in HSV, which is not linear. A rotation
    by ``2 * pi * hue`` about the grey axis (1, 1, 1) is exact for pure hues at multiples
    of 1/3 and, on CIFAR test images, about twice as close to ``adjust_hue`` as the
    classic YIQ rotation (mean abs error 0.016 vs 0.027 at hue 0.1; 0.0025 at 0.01).

    Args:
        hue: (B,) hue factors in [-0.5, 0.5].

    Returns:
        (B, 3, 3) matrices acting on RGB column vectors.
    """
    angle = 2 * math.pi * hue
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    eye = torch.eye(3, dtype=hue.dtype, device=hue.device)
    ones = torch.full((3, 3), 1 / 3, dtype=hue.dtype, device=hue.device)
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=hue.dtype, device=hue.device)
    # Rodrigues' formula with the unit axis (1, 1, 1) / sqrt(3).
    return cos * eye + (1 - cos) * ones + sin * cross / math.sqrt(3)


def jitter_matrices(factors: Tensor) -> Tensor:
    """Colour matrices of brightness, contrast, saturation and hue for each sample.

    Contrast also needs an offset ``(1 - c) * mean_grey`` that depends on the image at
    the time it is applied; ``color_jitter`` adds it.

    Args:
        factors: (B, 4) float ``(brightness, contrast, saturation, hue)`` factors.

    Returns:
        (B, 4, 3, 3) float, one RGB matrix per op, in the order above.
    """
    b, c, s, h = factors.unbind(1)
    eye = torch.eye(3, dtype=factors.dtype, device=factors.device)
    luma = torch.tensor(LUMA, dtype=factors.dtype, device=factors.device).expand(3, 3)
    bright = b[:, None, None] * eye
    contrast = c[:, None, None] * eye
    # Saturation blends with the grey image: s * x + (1 - s) * luma . x
    saturation = s[:, None, None] * eye + (1 - s)[:, None, None] * luma
    return torch.stack([bright, contrast, saturation, hue_rotation(h)], dim=1)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor, apply: Tensor) -> Tensor:
    """ColorJitter with per-sample factors and a per-sample random order of the four ops.

    Every op is a per-sample 3x3 matrix (plus an offset for contrast) followed by a clamp
    to [0, 1], as torchvision clamps after each op; so each of the 4 steps is one batched
    matmul whatever op each sample is at, and a random order per sample costs nothing.

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
    luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    rows = torch.arange(batch, device=images.device)
    x = images.flatten(2)  # (B, 3, H*W)
    for step in range(4):
        op = order[:, step]
        # Contrast blends with the mean grey level of the image as it is at this step.
        offset = torch.where(op == 1, contrast_weight * (x.mean(2) @ luma), 0.0)
        x = torch.baddbmm(offset[:, None, None], mats[rows, op], x).clamp_(0.0, 1.0)
    return x.view_as(images)


def grayscale(images: Tensor, mask: Tensor) -> Tensor:
    """Replaces flagged samples by their luma, repeated over 3 channels.

    Args:
        images: (B, 3, H, W) float.
        mask: (B,) bool.
    """
    luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    grey = torch.einsum("bchw,c->bhw", images, luma)[:, None]
    return torch.where(mask[:, None, None, None], grey, images)


def gaussian_blur(images: Tensor, sigma: Tensor, mask: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma and reflect padding (torchvision's).

    Args:
        images: (B, C, H, W) float.
        sigma: (B,) standard deviations in pixels.
        mask: (B,) bool; unflagged samples get a delta kernel, i.e. are left unchanged.
        kernel_size: odd kernel side in pixels.
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
    hit = mask[:, None, None, None] & (images >= threshold)
    return torch.where(hit, 1.0 - images, images)


# ------------------------------------------------------------------------ SSL recipe


@dataclass(frozen=True)
class SSLRecipe:
    """Two-view SSL augmentation; the defaults are MoCo v2's CIFAR recipe [0].

    crop -> colour jitter (p) -> grayscale (p) -> blur (p) -> solarize (p), with the
    horizontal flip folded into the crop: it commutes with every per-pixel op and with a
    symmetric blur. ``size`` is the output side (None keeps the input's height and width).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    gray_p: float = 0.2
    flip_p: float = 0.5
    blur_p: float = 0.0  # CIFAR recipes skip blur; ImageNet-size recipes use 0.5-1.0
    solarize_p: float = 0.0
    size: int | None = None

    def __post_init__(self) -> None:
        for name in ("jitter_p", "gray_p", "flip_p", "blur_p", "solarize_p"):
            _check_prob(name, getattr(self, name))
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be 0 < low <= high, got {self.crop_scale}")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Draws fresh per-sample parameters and returns one augmented view.

        Args:
            images: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1], any device.
            generator: the augmentation generator (CPU recommended, see module docs).
                Call twice for two views; each call advances it.

        Returns:
            (B, 3, size, size) float32 in [0, 1] on the images' device.
        """
        _check_batch(images, channels=3)
        batch, _, height, width = images.shape
        params = sample_ssl_params(self, batch, height, width, generator, images.device)
        return apply_ssl(images, params, self)


def _jitter_factors(recipe: SSLRecipe, batch: int, generator: torch.Generator) -> Tensor:
    """(B, 4) factors, as torchvision's ColorJitter: [max(0, 1 - x), 1 + x] and [-hue, hue]."""
    strengths = (recipe.brightness, recipe.contrast, recipe.saturation)
    low = torch.tensor([max(0.0, 1 - x) for x in strengths] + [-recipe.hue])
    high = torch.tensor([1 + x for x in strengths] + [recipe.hue])
    low, high = low.to(generator.device), high.to(generator.device)
    return low + (high - low) * _rand((batch, 4), generator)


def sample_ssl_params(
    recipe: SSLRecipe,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Draws every random choice of one SSL view for a batch.

    Returns:
        Tensors on ``device`` (default: the generator's): ``crop`` (B, 4) int64
        ``(top, left, height, width)``; ``flip``, ``jitter_apply``, ``gray``, ``blur``,
        ``solarize`` (B,) bool; ``jitter`` (B, 4) float32 factors ``(brightness, contrast,
        saturation, hue)``; ``jitter_order`` (B, 4) int64 permutation of those four ops;
        ``blur_sigma`` (B,) float32 in pixels.
    """
    crop = sample_crop_boxes(batch, height, width, recipe.crop_scale, recipe.crop_ratio, generator)
    coins = _rand((batch, 5), generator)
    probs = (recipe.flip_p, recipe.jitter_p, recipe.gray_p, recipe.blur_p, recipe.solarize_p)
    flags = coins < torch.tensor(probs, device=coins.device)
    jitter = _jitter_factors(recipe, batch, generator)
    order = torch.argsort(_rand((batch, 4), generator), dim=1)  # a uniform permutation
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * _rand((batch,), generator)
    names = ("flip", "jitter_apply", "gray", "blur", "solarize")
    params = {"crop": crop, "jitter": jitter, "jitter_order": order, "blur_sigma": sigma}
    params.update(zip(names, flags.unbind(1), strict=True))
    return {k: v.to(device or generator.device) for k, v in params.items()}


def apply_ssl(images: Tensor, params: dict[str, Tensor], recipe: SSLRecipe) -> Tensor:
    """Applies one SSL view with given parameters (from ``sample_ssl_params``).

    Args:
        images: (B, 3, H, W) uint8 or float in [0, 1].
        params: as returned by ``sample_ssl_params``, on the images' device.
        recipe: decides the output size and which ops run at all.

    Returns:
        (B, 3, size, size) float32 in [0, 1].
    """
    x = to_float(images)
    size = _out_size(recipe.size, *x.shape[2:])
    x = resized_crop_flip(x, params["crop"], params["flip"], size)
    # Skipping ops whose probability is 0 is for speed only; the result is the same.
    if recipe.jitter_p > 0:
        x = color_jitter(x, params["jitter"], params["jitter_order"], params["jitter_apply"])
    if recipe.gray_p > 0:
        x = grayscale(x, params["gray"])
    if recipe.blur_p > 0:
        x = gaussian_blur(x, params["blur_sigma"], params["blur"], blur_kernel_size(size[0]))
    if recipe.solarize_p > 0:
        x = solarize(x, params["solarize"])
    return x


# ---------------------------------------------------------- supervised and eval recipes


@dataclass(frozen=True)
class SupervisedRecipe:
    """CIFAR supervised recipe: zero-pad, random crop, horizontal flip.

    Like torchvision's ``RandomCrop(size, padding=pad)`` + ``RandomHorizontalFlip``:
    ``size`` is the crop side taken from the padded image (None: the input's H and W).
    """

    pad: int = 4
    flip_p: float = 0.5
    size: int | None = None

    def __post_init__(self) -> None:
        _check_prob("flip_p", self.flip_p)
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Same contract as ``SSLRecipe.__call__``, for any number of channels."""
        _check_batch(images)
        batch, _, height, width = images.shape
        params = sample_supervised_params(self, batch, height, width, generator, images.device)
        return apply_supervised(images, params, self)


def sample_supervised_params(
    recipe: SupervisedRecipe,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Returns ``crop`` (B, 2) int64 ``(top, left)`` in the padded image and ``flip`` (B,) bool."""
    out_h, out_w = _out_size(recipe.size, height, width)
    room = torch.tensor([height + 2 * recipe.pad - out_h, width + 2 * recipe.pad - out_w])
    if (room < 0).any():
        raise ValueError(f"crop {out_h}x{out_w} exceeds the padded {height}x{width} image")
    u = _rand((batch, 3), generator)
    crop = (u[:, :2] * (room.to(u.device) + 1)).floor().long()
    params = {"crop": crop, "flip": u[:, 2] < recipe.flip_p}
    return {k: v.to(device or generator.device) for k, v in params.items()}


def apply_supervised(images: Tensor, params: dict[str, Tensor], recipe: SupervisedRecipe) -> Tensor:
    """Pads with zeros, crops and flips with ``params``; returns (B, C, size, size) float32 [0, 1]."""
    out_h, out_w = _out_size(recipe.size, *images.shape[2:])
    x = F.pad(images, [recipe.pad] * 4)  # zeros, like RandomCrop's default fill
    batch, channels = x.shape[:2]
    top, left = params["crop"].unbind(1)
    cols = torch.arange(out_w, device=x.device)
    cols = torch.where(params["flip"][:, None], cols.flip(0), cols) + left[:, None]  # (B, W')
    rows = top[:, None] + torch.arange(out_h, device=x.device)  # (B, H')
    # Integer gathers instead of an interpolating grid: exact, and cheap on uint8.
    x = x.gather(2, rows[:, None, :, None].expand(batch, channels, out_h, x.shape[3]))
    x = x.gather(3, cols[:, None, None, :].expand(batch, channels, out_h, out_w))
    return to_float(x)


@dataclass(frozen=True)
class EvalRecipe:
    """No augmentation: float32 in [0, 1], resized (bilinear, antialiased) if ``size`` is set."""

    size: int | None = None

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Same contract as ``SSLRecipe.__call__``; ``generator`` is unused."""
        _check_batch(images)
        x = to_float(images)
        if self.size is None or tuple(x.shape[2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)


# --------------------------------------------------------------------------- registry

Recipe = SSLRecipe | SupervisedRecipe | EvalRecipe
AUGMENTATIONS: dict[str, Recipe] = {}


def register_augmentation(name: str, recipe: Recipe) -> Recipe:
    """Adds ``recipe`` under ``name``; raises ValueError if the name is taken."""
    if name in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r} is already registered")
    AUGMENTATIONS[name] = recipe
    return recipe


def build_augmentation(name: str, **overrides: object) -> Recipe:
    """Returns the registered recipe ``name`` with dataclass fields replaced by ``overrides``.

    Raises:
        ValueError: unknown name or unknown override, listing the valid ones.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augmentation {name!r}; valid: {', '.join(sorted(AUGMENTATIONS))}"
        )
    recipe = AUGMENTATIONS[name]
    fields = sorted(f.name for f in dataclasses.fields(recipe))
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name!r}; valid: {', '.join(fields)}")
    return dataclasses.replace(recipe, **overrides)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std`` for ``x: (B, C, H, W)`` float; returns a new tensor."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"need {x.shape[1]} means and stds, got {len(mean)} and {len(std)}")
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


register_augmentation("moco_v2", SSLRecipe())
# NOTE: solo-learn's CIFAR BYOL is asymmetric (solarize 0.0 / 0.2 per view); we keep one
# recipe for both views. Blur stays off on CIFAR, as in solo-learn's cifar/byol.yaml.
register_augmentation("byol", SSLRecipe(saturation=0.2, solarize_p=0.2))
register_augmentation("supervised", SupervisedRecipe())
register_augmentation("none", EvalRecipe())
