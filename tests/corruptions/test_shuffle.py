"""Properties of global/local patch shuffling and equality with the study's indexing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from corruptions import parse
from corruptions.shuffle import divisors


def _sorted_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W) sorted: the per-image, per-channel pixel multiset."""
    return images.flatten(2).sort(dim=-1).values


def _source_index(spec: str, h: int = 32, w: int = 32, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Read a corruption's pixel mapping off an image whose pixel values are their own indices."""
    ramp = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w).expand(batch, 1, h, w)
    return parse(spec)(ramp.contiguous(), torch.Generator().manual_seed(seed)).flatten(1).long()


@pytest.mark.parametrize(
    "spec",
    [
        "glo_2",
        "glo_8",
        "loc_4",
        "loc_16",
        "randglo_4",
        "randloc_8",
        "loc_4:patches=independent",
        "randloc_2:patches=independent",
    ],
)
def test_shuffle__preserves_each_images_pixel_multiset(spec, images_u8):
    out = parse(spec)(images_u8, torch.Generator().manual_seed(0))
    assert torch.equal(_sorted_pixels(out), _sorted_pixels(images_u8))


@pytest.mark.parametrize("spec", ["glo_32", "loc_1"])
def test_shuffle__most_random_settings_are_full_pixel_permutations(spec):
    index = _source_index(spec)[0]
    assert torch.equal(index.sort().values, torch.arange(32 * 32))
    # Pixels leave their patch/row neighbourhood: far more than a local move.
    moved_rows = (index // 32 != torch.arange(32 * 32) // 32).float().mean()
    assert moved_rows > 0.9


def test_shuffle__glo32_and_loc1_coincide_under_the_studys_definitions():
    # Both draw RandomState(42).permutation(H*W) over row-major one-pixel units, so the study's
    # "most random" settings are the very same permutation (the supplement: "similar effect").
    assert torch.equal(_source_index("glo_32"), _source_index("loc_1"))
    assert not torch.equal(_source_index("glo_32"), _source_index("glo_32:seed=0"))


def test_global__pixels_inside_a_patch_keep_their_order():
    index = _source_index("glo_4")[0].view(32, 32)
    patch = index[:8, :8]  # output patch (0, 0) comes from one source patch, contiguous
    assert torch.equal(patch - patch[0, 0], (torch.arange(8).view(8, 1) * 32 + torch.arange(8)))


def test_local__patches_stay_in_place():
    index = _source_index("loc_4")[0].view(32, 32)
    src_y, src_x = index // 32, index % 32
    out_y, out_x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert torch.equal(src_y // 8, out_y // 8) and torch.equal(src_x // 8, out_x // 8)


def test_fixed__one_permutation_for_every_image():
    index = _source_index("glo_8", batch=5)
    assert (index == index[:1]).all()
    index = _source_index("loc_4", batch=5)
    assert (index == index[:1]).all()


def test_fixed__same_permutation_in_another_process():
    code = (
        "import torch, corruptions;"
        "x = torch.arange(1024, dtype=torch.float64).view(1, 1, 32, 32);"
        "print(corruptions.parse('{spec}')(x).flatten().long().tolist())"
    )
    for spec in ("glo_8", "loc_4"):
        out = subprocess.run([sys.executable, "-c", code.format(spec=spec)], capture_output=True, text=True, check=True)
        assert eval(out.stdout) == _source_index(spec)[0].tolist()


def test_local_shared__same_inner_permutation_in_every_patch():
    index = _source_index("loc_4")[0].view(4, 8, 4, 8).permute(0, 2, 1, 3).reshape(16, 64)
    inner = (index // 32 % 8) * 8 + index % 8
    assert (inner == inner[:1]).all()


def test_local_independent__patches_get_different_permutations():
    index = _source_index("loc_4:patches=independent")[0].view(4, 8, 4, 8).permute(0, 2, 1, 3).reshape(16, 64)
    inner = (index // 32 % 8) * 8 + index % 8
    assert len({tuple(row.tolist()) for row in inner}) == 16


@pytest.mark.parametrize("spec", ["randglo_4", "randloc_4"])
def test_per_image__differs_between_images_and_draws(spec):
    index = _source_index(spec, batch=8)
    assert len({tuple(row.tolist()) for row in index}) == 8
    assert not torch.equal(index, _source_index(spec, batch=8, seed=1))


@pytest.mark.parametrize("spec", ["randglo_4", "randloc_4"])
def test_per_image__reproducible_from_generator_seed(spec):
    assert torch.equal(_source_index(spec, batch=8, seed=5), _source_index(spec, batch=8, seed=5))


# --- an independent transcription of the study's fixed-permutation indexing ---------------
# Written from its definition (docs/study.md §1.1): q = RandomState(42).permutation(...);
# global: output patch (y, x) = source patch divmod(q[y*N + x], N);
# local: output pixel k of every patch = pixel q[k] of the same patch (row-major inside patch).
def _study_global(img: np.ndarray, n: int) -> np.ndarray:
    s = img.shape[0] // n
    q = np.random.RandomState(42).permutation(n * n)
    out = np.empty_like(img)
    for y in range(n):
        for x in range(n):
            sy, sx = divmod(q[y * n + x], n)
            out[y * s : (y + 1) * s, x * s : (x + 1) * s] = img[sy * s : (sy + 1) * s, sx * s : (sx + 1) * s]
    return out


def _study_local(img: np.ndarray, n: int) -> np.ndarray:
    s = img.shape[0] // n
    q = np.random.RandomState(42).permutation(s * s)
    out = np.empty_like(img)
    for y in range(n):
        for x in range(n):
            patch = img[y * s : (y + 1) * s, x * s : (x + 1) * s].reshape(s * s, -1)
            out[y * s : (y + 1) * s, x * s : (x + 1) * s] = patch[q].reshape(s, s, -1)
    return out


@pytest.mark.parametrize("grid", divisors(32))
def test_fixed__equals_study_transcription(grid, images_u8):
    hwc = images_u8.permute(0, 2, 3, 1).numpy()
    for kind, reference in (("glo", _study_global), ("loc", _study_local)):
        ours = parse(f"{kind}_{grid}")(images_u8).permute(0, 2, 3, 1).numpy()
        expected = np.stack([reference(img, grid) for img in hwc])
        np.testing.assert_array_equal(ours, expected, err_msg=f"{kind}_{grid}")


def test_shuffle__non_square_images():
    x = torch.randint(0, 256, (2, 3, 24, 36), dtype=torch.uint8)
    for spec in ("glo_4", "loc_6", "randglo_3", "randloc_12"):
        y = parse(spec)(x, torch.Generator().manual_seed(0))
        assert torch.equal(_sorted_pixels(y), _sorted_pixels(x))
