"""Batched, per-sample-random augmentation on the training device.

A recipe maps a whole batch ``(B, C, H, W)`` to one view in a few batched tensor ops,
replacing a multi-worker PIL pipeline (airbench keeps CIFAR on the GPU, no workers).
Each sample gets its own parameters, drawn only from an explicit ``Generator``.

Draws happen on ``generator.device`` and are then moved to the images' device. Use a CPU
generator: the draws are tiny and the views are then the same on CPU and CUDA. The draws
have fixed shapes whatever the probabilities, so changing ``blur_p`` leaves the crops alone.
Sampling (``sample_*_params``) and applying (``apply_*``) are separate so tests can replay
torchvision's per-image ops with exactly the drawn parameters. A ``PerView`` gives each view
of a method its own recipe (the study's BYOL: view 1 never solarized, view 2 with p 0.2).

[0] He et al., 2020, Momentum Contrast (MoCo v2 recipe), https://arxiv.org/abs/2003.04297
[1] Grill et al., 2020, Bootstrap Your Own Latent, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Generator, Tensor

from trainables.data.augment_ops import (
    BLUR_SIGMA,
    _check_prob,
    _out_size,
    _rand,
    blur_kernel_size,
    color_jitter,
    constant,
    gaussian_blur,
    grayscale,
    move_to,
    resized_crop_flip,
    sample_crop_boxes,
    solarize,
)

Params = dict[str, Tensor]  # one view's draws, e.g. "crop": (B, 4); see sample_ssl_params
Device = torch.device | str | None


class Augmentation(Protocol):
    """What every recipe is: ``(images, generator) -> view`` (see ``SSLRecipe.__call__``), which is
    ``apply(images, sample(B, H, W, generator, images.device))``."""

    def __call__(self, images: Tensor, generator: Generator) -> Tensor: ...

    def sample(self, batch: int, height: int, width: int, generator: Generator, device: Device = None) -> Params: ...

    def apply(self, images: Tensor, params: Params) -> Tensor: ...


def augment_rows(recipe: Augmentation, images: Tensor, generator: Generator, batch: int, rows: slice) -> Tensor:
    """Rows ``rows`` of ``recipe(whole, generator)``, from those rows alone.

    A data-parallel rank augments only its shard, yet gets the single process's views: every
    parameter is drawn for the whole batch (the generator advances as it would there) and only the
    rows' are applied; each image's view depends only on that image and its own parameters.

    Args:
        images: (b, C, H, W), rows ``rows`` (``b`` of them) of a batch of ``batch`` images.
        generator: the augmentation generator.

    Returns:
        (b, C, H', W') float32 in [0, 1].
    """
    params = recipe.sample(batch, *images.shape[2:], generator, images.device)
    return recipe.apply(images, {key: value[rows] for key, value in params.items()})


def to_float(images: Tensor) -> Tensor:
    """``images: (B, C, H, W)`` uint8 in [0, 255] or float in [0, 1] -> float32 in [0, 1]."""
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

    def __call__(self, images: Tensor, generator: Generator) -> Tensor:
        """Draws fresh per-sample parameters and returns one augmented view.

        Args:
            images: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1], any device.
            generator: the augmentation generator (CPU recommended, see module docs).
                Call twice for two views; each call advances it.

        Returns:
            (B, 3, size, size) float32 in [0, 1] on the images' device.
        """
        return self.apply(images, self.sample(images.shape[0], *images.shape[2:], generator, images.device))

    def sample(self, batch: int, height: int, width: int, generator: Generator, device: Device = None) -> Params:
        """Every random choice for a batch of ``batch`` images of ``height x width`` (``sample_ssl_params``)."""
        return sample_ssl_params(self, batch, height, width, generator, device)

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """(B, 3, H, W) -> one view with drawn ``params`` (``apply_ssl``)."""
        _check_batch(images, channels=3)
        return apply_ssl(images, params, self)


def _jitter_factors(recipe: SSLRecipe, batch: int, generator: Generator) -> Tensor:
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
    generator: Generator,
    device: Device = None,
) -> Params:
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
    return {k: move_to(v, device or generator.device) for k, v in params.items()}


def apply_ssl(images: Tensor, params: Params, recipe: SSLRecipe) -> Tensor:
    """One SSL view of ``images: (B, 3, H, W)`` (uint8 or float [0, 1]) with given params.

    ``params`` come from ``sample_ssl_params`` (on the images' device); ``recipe`` sets the
    output size and which ops run at all. Returns (B, 3, size, size) float32 in [0, 1].
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

    def __call__(self, images: Tensor, generator: Generator) -> Tensor:
        """Same contract as ``SSLRecipe.__call__``, for any number of channels."""
        return self.apply(images, self.sample(images.shape[0], *images.shape[2:], generator, images.device))

    def sample(self, batch: int, height: int, width: int, generator: Generator, device: Device = None) -> Params:
        """Crop offsets and flips for a batch (``sample_supervised_params``)."""
        return sample_supervised_params(self, batch, height, width, generator, device)

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """(B, C, H, W) -> one view with drawn ``params`` (``apply_supervised``)."""
        _check_batch(images)
        return apply_supervised(images, params, self)


def sample_supervised_params(
    recipe: SupervisedRecipe,
    batch: int,
    height: int,
    width: int,
    generator: Generator,
    device: Device = None,
) -> Params:
    """Returns ``crop`` (B, 2) int64 ``(top, left)`` in the padded image and ``flip`` (B,) bool."""
    out_h, out_w = _out_size(recipe.size, height, width)
    room = torch.tensor([height + 2 * recipe.pad - out_h, width + 2 * recipe.pad - out_w])
    if (room < 0).any():
        raise ValueError(f"crop {out_h}x{out_w} exceeds the padded {height}x{width} image")
    u = _rand((batch, 3), generator)
    crop = (u[:, :2] * (room.to(u.device) + 1)).floor().long()
    params = {"crop": crop, "flip": u[:, 2] < recipe.flip_p}
    return {k: move_to(v, device or generator.device) for k, v in params.items()}


def apply_supervised(images: Tensor, params: Params, recipe: SupervisedRecipe) -> Tensor:
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

    def __call__(self, images: Tensor, generator: Generator | None = None) -> Tensor:
        """Same contract as ``SSLRecipe.__call__``; ``generator`` is unused."""
        return self.apply(images, {})

    def sample(self, batch: int, height: int, width: int, generator: Generator, device: Device = None) -> Params:
        """Nothing is random: no parameters."""
        return {}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """(B, C, H, W) -> float32 [0, 1], resized to ``size`` if set."""
        _check_batch(images)
        x = to_float(images)
        if self.size is None or tuple(x.shape[2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)


@dataclass(frozen=True)
class PerView:
    """One recipe per view: view ``i`` of a method's ``n_views`` gets ``views[i]``.

    solo-learn builds one pipeline per value of its per-pipeline lists (``--solarization_prob
    0.0 0.2 --num_crops_per_aug 1 1``: the first crop is never solarized, the second with p 0.2;
    the study's ``solo/args/utils.py``); a plain recipe is the one-value case and serves every
    view. Called directly (one view, e.g. the alignment metric's), it is ``views[0]``.
    """

    views: tuple[SSLRecipe | SupervisedRecipe | EvalRecipe, ...]

    def __post_init__(self) -> None:
        if not self.views or len({type(v) for v in self.views}) != 1:
            raise ValueError(f"PerView needs one or more recipes of one kind, got {self.views!r}")

    def __call__(self, images: Tensor, generator: Generator) -> Tensor:
        """View 0's recipe (same contract as ``SSLRecipe.__call__``)."""
        return self.views[0](images, generator)

    def sample(self, batch: int, height: int, width: int, generator: Generator, device: Device = None) -> Params:
        """View 0's recipe's draws."""
        return self.views[0].sample(batch, height, width, generator, device)

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """View 0's recipe with drawn ``params``."""
        return self.views[0].apply(images, params)


Recipe = SSLRecipe | SupervisedRecipe | EvalRecipe | PerView
AUGMENTATIONS: dict[str, Recipe] = {}


def view_recipes(recipe: Recipe, n_views: int) -> tuple[Recipe, ...]:
    """The recipe of each of ``n_views`` views: a ``PerView``'s first ``n_views``, else ``recipe`` for all.

    Raises:
        ValueError: a ``PerView`` with fewer recipes than ``n_views``.
    """
    if not isinstance(recipe, PerView):
        return (recipe,) * n_views
    if n_views > len(recipe.views):
        raise ValueError(
            f"augmentation has {len(recipe.views)} per-view recipes, the method needs {n_views} views; "
            "valid: a recipe for every view, or one recipe for all"
        )
    return recipe.views[:n_views]


def recipe_options(recipe: Recipe) -> list[str]:
    """The option names ``build_augmentation`` accepts for ``recipe`` (a ``PerView``: its recipes')."""
    return sorted(f.name for f in dataclasses.fields(recipe.views[0] if isinstance(recipe, PerView) else recipe))


def register_augmentation(name: str, recipe: Recipe) -> Recipe:
    """Adds ``recipe`` under ``name``; raises ValueError if the name is taken."""
    if name in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r} is already registered")
    AUGMENTATIONS[name] = recipe
    return recipe


def build_augmentation(name: str, **overrides: object) -> Recipe:
    """Returns the registered recipe ``name`` with dataclass fields replaced by ``overrides``.

    A ``PerView`` recipe gets the overrides in every view's recipe (``crop_scale=(0.38, 1.0)``
    changes both crops and keeps the per-view solarization).

    Raises:
        ValueError: unknown name or unknown override, listing the valid ones.
    """
    if name not in AUGMENTATIONS:
        valid = ", ".join(sorted(AUGMENTATIONS))
        raise ValueError(f"unknown augmentation {name!r}; valid: {valid}")
    recipe = AUGMENTATIONS[name]
    fields = recipe_options(recipe)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name!r}; valid: {', '.join(fields)}")
    if isinstance(recipe, PerView):
        return PerView(tuple(dataclasses.replace(view, **overrides) for view in recipe.views))
    return dataclasses.replace(recipe, **overrides)


def resamples_crop(recipe: Recipe) -> bool:
    """Whether every view of ``recipe`` is a random-resized crop (``SSLRecipe``), which resamples its box."""
    return all(isinstance(view, SSLRecipe) for view in (recipe.views if isinstance(recipe, PerView) else (recipe,)))


def view_augmentation(
    name: str, crop_size: int | None = None, input_size: int | None = None, **overrides: object
) -> tuple[Recipe, int | None]:
    """The registered recipe ``name`` for a network that takes ``input_size`` px inputs, and the side
    the pipeline must still resize its views to (``trainables.data.batches.Pipeline.resize_to``).

    Without ``input_size``: the recipe with output side ``crop_size`` (None: the stored image's),
    nothing resized after it. With ``input_size``, the views are resized after the crop, so the crop
    happens at the stored scale, on the corruption's own grid:

    - a random-resized crop (the SSL recipes) resamples its box once, straight to ``input_size``.
      Cropping to ``crop_size`` and then resizing to ``input_size`` maps each output pixel to the
      same source point (both are ``align_corners=False`` affine maps of the box), so it is one
      resize; done in one step it interpolates once instead of twice, and ``crop_size`` has no
      effect. The colour ops then run at ``input_size``, as in DeiT's CIFAR transfer pipeline
      (timm's ``RandomResizedCrop(224)`` of the 32 px image, then the photometric ops;
      facebookresearch/deit ``datasets.py`` ``build_transform``). That costs more than colour ops at
      the stored size and one upsampling after (2.6x the augmentation time of 64 images, 32 -> 224
      px, ``moco_v2``, one CPU thread), little beside a 224 px network's step.
    - any other recipe (``pad_crop``, ``none``) outputs ``crop_size`` (or the stored size) and the
      pipeline upsamples its views to ``input_size``: a pad-4 crop stays a shift of whole stored
      pixels, so the upsampled view keeps the corruption's patches aligned.

    ``overrides`` are further recipe options (``crop_scale``), as ``build_augmentation`` takes them.
    """
    if input_size is not None and resamples_crop(build_augmentation(name)):
        return build_augmentation(name, **overrides, size=input_size), None
    sized = {} if crop_size is None else {"size": crop_size}
    return build_augmentation(name, **overrides, **sized), input_size


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std`` for ``x: (B, C, H, W)`` float; returns a new tensor."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"need {x.shape[1]} means and stds, got {len(mean)} and {len(std)}")
    mean_t = constant(mean, x.dtype, x.device).view(1, -1, 1, 1)
    std_t = constant(std, x.dtype, x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


register_augmentation("moco_v2", SSLRecipe())
# The study's supervised pipeline (script/sup.sh): the SSL recipe above, one crop per image.
register_augmentation("study", SSLRecipe())
# The study's BYOL, Barlow Twins and DINO (script/{byol,barlow,dino}.sh): saturation 0.2,
# `--solarization_prob 0.0 0.2` (view 1 never solarized, view 2 with p 0.2), `--gaussian_prob 0.0 0.0`.
register_augmentation(
    "byol", PerView((SSLRecipe(saturation=0.2, solarize_p=0.0), SSLRecipe(saturation=0.2, solarize_p=0.2)))
)
# The study's ImageNet-100 MoCo-v2 (script/in100_mocov2b.sh): jitter 0.4/0.4/0.4/0.1, `--gaussian_prob 1.0 0.1
# --solarization_prob 0.0 0.2` (two asymmetric views), crops of 224 from the 256 px image (data.crop_size).
register_augmentation(
    "moco_v2_imagenet", PerView((SSLRecipe(blur_p=1.0, solarize_p=0.0), SSLRecipe(blur_p=0.1, solarize_p=0.2)))
)
# The study's ImageNet-100 supervised (script/in100_sup.sh): one crop, saturation 0.2, blur 0.55, solarize 0.1.
register_augmentation("study_imagenet", SSLRecipe(saturation=0.2, blur_p=0.55, solarize_p=0.1))
register_augmentation("pad_crop", SupervisedRecipe())  # the usual CIFAR supervised recipe, not the study's
# NOTE: "supervised" is pad_crop's name before the study's pipeline became the supervised default;
# kept so that configs recorded with it still resolve.
register_augmentation("supervised", AUGMENTATIONS["pad_crop"])
register_augmentation("none", EvalRecipe())
