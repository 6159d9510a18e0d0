"""Global and local patch shuffling (Zhong et al. 2023, docs/study.md §1.1).

The image is cut into an ``grid x grid`` array of patches, each ``(H/grid) x (W/grid)`` pixels.

* **Global** shuffle moves whole patches: output patch ``p`` is source patch ``q[p]``; pixels
  inside a patch keep their order.
* **Local** shuffle moves pixels inside each patch: output pixel ``k`` of a patch is source pixel
  ``r[k]`` of the same patch; patches stay where they are.

Both are a single gather through a pixel index map ``(H*W,)`` (fixed mode) or ``(B, H*W)``
(per-image mode), so any device and any dtype work at memory speed.

Permutation modes:

* ``fixed`` (the study's setting): one permutation for the whole dataset, drawn with
  ``numpy.random.RandomState(seed).permutation`` exactly as the study's ``corrupt.py`` does, so the
  train and test sets (and every process) share it. For local shuffle the study's code reuses one
  pixel permutation in every patch (``patches="shared"``, the default); its project page says
  "independently", which is ``patches="independent"`` (one permutation per patch, drawn in
  patch order from the same RandomState).
* ``per_image`` (``randglo``/``randloc``): a fresh permutation for every image each time it is
  drawn, from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import Tensor

from corruptions.base import Corruption, CorruptionError, check_choice, register_corruption

MODES = ("fixed", "per_image")
PATCH_MODES = ("shared", "independent")


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n`` in increasing order (the valid grids for an n-px side)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def pixel_index(patch_perm: Tensor, pixel_perm: Tensor, height: int, width: int, grid: int) -> Tensor:
    """Compose patch and in-patch permutations into one flat gather index.

    Args:
        patch_perm: (..., grid*grid) int64; output patch p comes from source patch patch_perm[p].
        pixel_perm: (..., grid*grid, ph*pw) int64; output pixel k of output patch p comes from
            pixel pixel_perm[p, k] of its source patch (row-major inside the patch).
        height, width, grid: image size and patches per side.

    Returns:
        (..., H*W) int64: flat source index of every flat output pixel.
    """
    ph, pw = height // grid, width // grid
    y = torch.arange(height).view(height, 1)
    x = torch.arange(width).view(1, width)
    out_patch = ((y // ph) * grid + x // pw).reshape(-1)  # (H*W,)
    out_inner = ((y % ph) * pw + x % pw).reshape(-1)  # (H*W,)
    src_patch = patch_perm[..., out_patch]  # (..., H*W)
    src_inner = torch.gather(
        pixel_perm[..., out_patch, :], -1, out_inner.expand(*pixel_perm.shape[:-2], -1).unsqueeze(-1)
    ).squeeze(-1)  # (..., H*W)
    src_y = (src_patch // grid) * ph + src_inner // pw
    src_x = (src_patch % grid) * pw + src_inner % pw
    return src_y * width + src_x


def gather_pixels(images: Tensor, index: Tensor) -> Tensor:
    """Apply a flat pixel index to a batch.

    Args:
        images: (B, C, H, W) any dtype.
        index: (H*W,) shared by the batch, or (B, H*W) one per image.
    """
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    if index.ndim == 1:
        if images.device.type == "cpu" and not images.requires_grad:
            # torch's CPU index_select along the last dim is ~15x slower than numpy's take.
            return torch.from_numpy(np.take(flat.numpy(), index.numpy(), axis=2)).view(b, c, h, w)
        return flat.index_select(2, index.to(images.device)).view(b, c, h, w)
    index = index.to(images.device)
    return torch.gather(flat, 2, index.unsqueeze(1).expand(b, c, h * w)).view(b, c, h, w)


@functools.lru_cache(maxsize=64)
def _fixed_index(kind: str, grid: int, height: int, width: int, seed: int, patches: str) -> Tensor:
    """The study's fixed permutation as a flat pixel index, cached per setting."""
    n_patches, n_pixels = grid * grid, (height // grid) * (width // grid)
    rng = np.random.RandomState(seed)
    identity_patches = torch.arange(n_patches)
    identity_pixels = torch.arange(n_pixels).expand(n_patches, n_pixels)
    if kind == "global":
        return pixel_index(torch.from_numpy(rng.permutation(n_patches)), identity_pixels, height, width, grid)
    if patches == "shared":
        perm = torch.from_numpy(rng.permutation(n_pixels)).expand(n_patches, n_pixels)
    else:
        perm = torch.from_numpy(np.stack([rng.permutation(n_pixels) for _ in range(n_patches)]))
    return pixel_index(identity_patches, perm, height, width, grid)


def _random_perm(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform random permutations along the last dim of ``shape`` (argsort of uniforms)."""
    return torch.rand(shape, generator=generator).argsort(dim=-1)


@dataclasses.dataclass(frozen=True)
class _PatchShuffle(Corruption):
    grid: int
    mode: str = "fixed"
    seed: int = 42

    main_param = "grid"

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise CorruptionError(
                f"{type(self).__name__}: grid must be a positive integer, got {self.grid}; valid: divisors of the image side"
            )
        check_choice(type(self).__name__, "mode", self.mode, MODES)

    @property
    def fixed(self) -> bool:
        return self.mode == "fixed"

    def check(self, height: int, width: int) -> None:
        if height % self.grid or width % self.grid:
            valid = [d for d in divisors(height) if width % d == 0]
            raise CorruptionError(
                f"corruption {str(self)!r}: grid {self.grid} does not divide the {height}x{width} image; "
                f"valid grids: {', '.join(map(str, valid))}"
            )

    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        h, w = images.shape[-2:]
        if self.fixed:
            index = _fixed_index(self.family, self.grid, h, w, self.seed, getattr(self, "patches", "shared"))
        else:
            index = self._random_index(images.shape[0], h, w, generator)
        return gather_pixels(images, index)


@register_corruption
@dataclasses.dataclass(frozen=True)
class GlobalShuffle(_PatchShuffle):
    """Move whole patches of a ``grid x grid`` array; ``glo_1`` is the identity."""

    spec_names = {"glo": {"mode": "fixed"}, "randglo": {"mode": "per_image"}}
    examples = ("glo_4", "glo_32", "randglo_8", "glo_2:seed=7")
    family = "global"

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption:
        return cls(grid=1)

    def _random_index(self, batch: int, h: int, w: int, generator: torch.Generator | None) -> Tensor:
        n_patches, n_pixels = self.grid**2, (h // self.grid) * (w // self.grid)
        pixels = torch.arange(n_pixels).expand(batch, n_patches, n_pixels)
        return pixel_index(_random_perm((batch, n_patches), generator), pixels, h, w, self.grid)


@register_corruption
@dataclasses.dataclass(frozen=True)
class LocalShuffle(_PatchShuffle):
    """Move pixels inside each patch of a ``grid x grid`` array; ``loc_<H>`` is the identity.

    ``patches="shared"`` (default, the study's code) uses one in-patch permutation for every
    patch; ``patches="independent"`` (the project page's wording) draws one per patch.
    """

    patches: str = "shared"

    spec_names = {"loc": {"mode": "fixed"}, "randloc": {"mode": "per_image"}}
    examples = ("loc_4", "loc_1", "randloc_8", "loc_8:patches=independent", "randloc_2:patches=independent")
    family = "local"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(type(self).__name__, "patches", self.patches, PATCH_MODES)

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption | None:
        # One-pixel patches need grid == H == W; a non-square image has no local identity.
        return cls(grid=height) if height == width else None

    def _random_index(self, batch: int, h: int, w: int, generator: torch.Generator | None) -> Tensor:
        n_patches, n_pixels = self.grid**2, (h // self.grid) * (w // self.grid)
        if self.patches == "shared":
            perm = _random_perm((batch, 1, n_pixels), generator).expand(batch, n_patches, n_pixels)
        else:
            perm = _random_perm((batch, n_patches, n_pixels), generator)
        patches = torch.arange(n_patches).expand(batch, n_patches)
        return pixel_index(patches, perm, h, w, self.grid)
