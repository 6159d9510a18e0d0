"""Resizing to the network's input side (``data.input_size``): the resize op, which recipes resample
their crop straight to it, and the pipeline's per-batch resize of the others' views."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corruptions import parse
from trainables.data.augment import AUGMENTATIONS, PerView, build_augmentation, view_augmentation
from trainables.data.augment_ops import resize
from trainables.data.batches import Pipeline

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(side: int = 16, batch: int = 4) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _gens(seed: int = 0) -> dict[str, torch.Generator]:
    return {k: torch.Generator().manual_seed(seed + i) for i, k in enumerate(("corruption", "augment"))}


def test_resize__bilinear_antialiased_only_when_shrinking():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    up = F.interpolate(x, size=(40, 40), mode="bilinear", align_corners=False, antialias=False)
    down = F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(resize(x, 40), up) and torch.equal(resize(x, 6), down)
    plain_down = F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False)
    assert (resize(x, 6) - plain_down).abs().max() > 1e-3  # the antialiasing is there when shrinking
    assert resize(x, 16) is x


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("crop_size", [None, 12])
def test_view_augmentation__without_input_size_is_the_recipe_at_crop_size(name, crop_size):
    recipe, resize_to = view_augmentation(name, crop_size, None)
    assert resize_to is None
    assert recipe == build_augmentation(name, **({"size": crop_size} if crop_size else {}))


def test_view_augmentation__input_size_resamples_ssl_crops_and_leaves_the_rest_to_the_pipeline():
    ssl, resize_to = view_augmentation("moco_v2", 12, 32, crop_scale=(0.5, 1.0))
    assert resize_to is None and ssl.size == 32 and ssl.crop_scale == (0.5, 1.0)
    byol, resize_to = view_augmentation("byol", None, 32)
    assert resize_to is None and isinstance(byol, PerView) and [v.size for v in byol.views] == [32, 32]
    for name in ("pad_crop", "none"):
        recipe, resize_to = view_augmentation(name, 12, 32)
        assert resize_to == 32 and recipe.size == 12  # crop (or no-op resize) at the stored scale, then upsampled


@pytest.mark.parametrize("name", ["pad_crop", "moco_v2", "none"])
def test_pipeline__input_size_views_have_that_side_and_pad_crop_is_its_stored_view_upsampled(name):
    images = _images()
    recipe, resize_to = view_augmentation(name, None, 32)
    resized = Pipeline(parse("ori"), recipe, 2, MEAN, STD, resize_to)(images, _gens())
    assert [tuple(v.shape) for v in resized] == [(4, 3, 32, 32)] * 2
    if name == "moco_v2":
        return  # resampled in the crop: no stored-size view to compare with
    stored = Pipeline(parse("ori"), build_augmentation(name), 2, MEAN, STD)(images, _gens())
    for view, small in zip(resized, stored, strict=True):
        assert small.shape[-1] == 16
        torch.testing.assert_close(view, F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False))
