"""Batched augmentation: the recipe contract, and torchvision's per-image ops on the same draws."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from corruptions import parse
from tests.conftest import devices
from trainables.data.augment import (
    AUGMENTATIONS,
    PerView,
    SSLRecipe,
    SupervisedRecipe,
    apply_ssl,
    apply_supervised,
    build_augmentation,
    normalize,
    register_augmentation,
    sample_ssl_params,
    sample_supervised_params,
    view_recipes,
)
from trainables.data.augment_ops import (
    CROP_ATTEMPTS,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    grayscale,
    resized_crop_flip,
    sample_crop_boxes,
    solarize,
)
from trainables.data.batches import Pipeline

RANDOM_RECIPES = ["byol", "moco_v2", "supervised"]
OP_NAMES = ("brightness", "contrast", "saturation", "hue")
TV_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _smooth_images(batch: int = 16, side: int = 32, seed: int = 0) -> torch.Tensor:
    """(B, 3, side, side) float in [0, 1]: smooth, saturated colour fields plus fine noise."""
    g = _gen(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic")
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_recipe__float01_output_same_batch_and_device(name, dtype, device):
    x = _smooth_images(8)
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x
    out = AUGMENTATIONS[name](x.to(device), _gen())
    assert out.dtype == torch.float32 and out.device.type == device
    assert out.shape == (8, 3, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_recipe__size_override_sets_output_side(name):
    out = build_augmentation(name, size=24)(_smooth_images(4), _gen())
    assert out.shape == (4, 3, 24, 24)


@pytest.mark.parametrize("name", RANDOM_RECIPES)
def test_recipe__same_seed_same_views_other_seed_or_view_differs(name):
    recipe, x = AUGMENTATIONS[name], _smooth_images(8)
    g = _gen(1)
    view1, view2 = recipe(x, g), recipe(x, g)
    again = _gen(1)
    assert torch.equal(view1, recipe(x, again)) and torch.equal(view2, recipe(x, again))
    assert not torch.equal(view1, view2)
    assert not torch.equal(view1, recipe(x, _gen(2)))


@pytest.mark.parametrize("device", devices())
def test_ssl__cpu_generator_gives_the_same_views_on_every_device(device):
    recipe, x = build_augmentation("byol", blur_p=0.5), _smooth_images(8)
    on_device = recipe(x.to(device), _gen()).cpu()
    assert _max_diff(on_device, recipe(x, _gen())) < 1e-5


def test_ssl__each_sample_gets_its_own_crop():
    x = _smooth_images(1).expand(32, -1, -1, -1)  # one image, 32 times
    params = sample_ssl_params(SSLRecipe(), 32, 32, 32, _gen())
    assert len({tuple(box) for box in params["crop"].tolist()}) == 32
    out = SSLRecipe()(x, _gen()).flatten(1)
    assert (torch.cdist(out, out) + torch.eye(32)).min() > 0  # all views pairwise distinct


def test_ssl__flag_frequencies_match_probabilities():
    recipe = SSLRecipe(blur_p=0.3, solarize_p=0.1)
    params = sample_ssl_params(recipe, 20_000, 32, 32, _gen())
    for key, p in [
        ("flip", 0.5),
        ("jitter_apply", 0.8),
        ("gray", 0.2),
        ("blur", 0.3),
        ("solarize", 0.1),
    ]:
        assert abs(params[key].float().mean().item() - p) < 0.015, key
    assert torch.equal(params["jitter_order"].sort(1).values, torch.arange(4).expand(20_000, 4))
    low, high = torch.tensor([0.6, 0.6, 0.6, -0.1]), torch.tensor([1.4, 1.4, 1.4, 0.1])
    assert ((params["jitter"] >= low) & (params["jitter"] <= high)).all()


# ------------------------------------------------------------ crop: boxes and resampling


def _torchvision_box(u: torch.Tensor, height: int, width: int, scale, ratio) -> list[int]:
    """torchvision RandomResizedCrop.get_params, fed our (10, 4) uniforms instead of its RNG."""
    for area_u, ratio_u, top_u, left_u in u.tolist():
        target_area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * ratio_u)
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return [int(top_u * (height - h + 1)), int(left_u * (width - w + 1)), h, w]
    return [(height - height) // 2, (width - width) // 2, height, width]  # square: whole image


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.9, 1.4)])  # the second often falls back
def test_crop_boxes__equal_torchvision_get_params_on_same_uniforms(scale):
    ratio = (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(500, 32, 32, scale, ratio, _gen(3))
    uniforms = torch.rand(500, CROP_ATTEMPTS, 4, generator=_gen(3), dtype=torch.float64)
    expected = [_torchvision_box(u, 32, 32, scale, ratio) for u in uniforms]
    assert boxes.tolist() == expected
    if scale[1] > 1:
        assert (boxes == torch.tensor([0, 0, 32, 32])).all(1).any()  # fallback was exercised


@pytest.mark.parametrize("size", [32, 24, 48])
def test_resized_crop_flip__matches_torchvision_resized_crop_and_hflip(size):
    x = _smooth_images(64)
    params = sample_ssl_params(SSLRecipe(), 64, 32, 32, _gen())
    ours = resized_crop_flip(x, params["crop"], params["flip"], (size, size))
    for img, box, flip, out in zip(x, params["crop"].tolist(), params["flip"], ours, strict=True):
        ref = TF.resized_crop(img, *box, size=[size, size], antialias=False)
        ref = TF.horizontal_flip(ref) if flip else ref
        assert _max_diff(out, ref) < 1e-5  # measured: 2e-7 (float rounding only)


# ---------------------------------------------------------------------------- colour ops


@pytest.mark.parametrize("op", [0, 1, 2])
def test_color_jitter__single_op_matches_torchvision(op):
    x, factors = _smooth_images(16), torch.ones(16, 4)
    factors[:, 3] = 0.0
    factors[:, op] = torch.linspace(0.0, 2.0, 16)
    order = torch.tensor([op] + [k for k in range(4) if k != op]).expand(16, 4)
    ours = color_jitter(x, factors, order, torch.ones(16, dtype=torch.bool))
    ref = torch.stack([TV_OPS[op](img, f[op].item()) for img, f in zip(x, factors, strict=True)])
    assert _max_diff(ours, ref) < 1e-5, OP_NAMES[op]  # measured: ~3e-7


def _torchvision_view(img: torch.Tensor, p: dict, i: int, size: int) -> torch.Tensor:
    """One sample through torchvision's per-image ops, in the recipe's order, with our draws."""
    out = TF.resized_crop(img, *p["crop"][i].tolist(), size=[size, size], antialias=False)
    out = TF.horizontal_flip(out) if p["flip"][i] else out
    if p["jitter_apply"][i]:
        for op in p["jitter_order"][i].tolist():
            out = TV_OPS[op](out, p["jitter"][i, op].item())
    out = TF.rgb_to_grayscale(out, num_output_channels=3) if p["gray"][i] else out
    if p["blur"][i]:
        sigma = p["blur_sigma"][i].item()
        out = TF.gaussian_blur(out, [blur_kernel_size(size)] * 2, [sigma, sigma])
    return TF.solarize(out, 0.5) if p["solarize"][i] else out


def test_apply_ssl__matches_torchvision_composition_without_hue():
    recipe = SSLRecipe(hue=0.0, blur_p=0.5, solarize_p=0.5, size=40)
    x = _smooth_images(48)
    params = sample_ssl_params(recipe, 48, 32, 32, _gen(5))
    ours = apply_ssl(x, params, recipe)
    ref = torch.stack([_torchvision_view(img, params, i, 40) for i, img in enumerate(x)])
    assert _max_diff(ours, ref) < 1e-5  # measured: ~5e-7


@pytest.mark.parametrize(("hue", "mean_tol", "max_tol"), [(0.02, 0.01, 0.1), (0.1, 0.04, 0.4)])
def test_color_jitter__hue_close_to_torchvision_adjust_hue(hue, mean_tol, max_tol):
    x = _smooth_images(32)
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(32, 1)
    factors[:, 3] = torch.linspace(-hue, hue, 32)
    ours = color_jitter(x, factors, torch.tensor([3, 0, 1, 2]).expand(32, 4), torch.ones(32, dtype=torch.bool))
    ref = torch.stack([TF.adjust_hue(img, f[3].item()) for img, f in zip(x, factors, strict=True)])
    err = (ours - ref).abs()
    # measured on these images: mean 0.005 / max 0.06 at |hue| <= 0.02; 0.019 / 0.23 at 0.1
    assert err.mean() < mean_tol and err.max() < max_tol


def test_color_jitter__unapplied_samples_are_unchanged():
    x = _smooth_images(8)
    factors = torch.tensor([1.3, 0.7, 0.2, 0.05]).repeat(8, 1)
    out = color_jitter(x, factors, torch.arange(4).expand(8, 4), torch.arange(8) % 2 == 0)
    assert torch.equal(out[1::2], x[1::2]) and not torch.allclose(out[::2], x[::2])


def test_grayscale__matches_torchvision_rgb_to_grayscale_where_flagged():
    x, mask = _smooth_images(8), torch.arange(8) % 3 == 0
    ours = grayscale(x, mask)
    assert _max_diff(ours[mask], TF.rgb_to_grayscale(x[mask], num_output_channels=3)) < 1e-6
    assert torch.equal(ours[~mask], x[~mask])


def test_gaussian_blur__matches_torchvision_per_sample_sigma():
    x, sigma = _smooth_images(8), torch.linspace(0.1, 2.0, 8)
    mask = torch.tensor([True, False] * 4)
    ours = gaussian_blur(x, sigma, mask, kernel_size=5)
    for img, s, m, out in zip(x, sigma.tolist(), mask, ours, strict=True):
        ref = TF.gaussian_blur(img, [5, 5], [s, s]) if m else img
        assert _max_diff(out, ref) < 1e-5


def test_solarize__matches_torchvision_where_flagged():
    x, mask = _smooth_images(8), torch.arange(8) < 4
    ours = solarize(x, mask)
    assert torch.equal(ours[:4], TF.solarize(x[:4], 0.5)) and torch.equal(ours[4:], x[4:])


# ------------------------------------------------------------------- supervised and eval


def test_supervised__equals_torchvision_zero_pad_crop_flip():
    recipe = AUGMENTATIONS["supervised"]
    x = (_smooth_images(32) * 255).to(torch.uint8)
    params = sample_supervised_params(recipe, 32, 32, 32, _gen())
    ours = apply_supervised(x, params, recipe)
    for img, (top, left), flip, out in zip(x, params["crop"].tolist(), params["flip"], ours, strict=True):
        ref = TF.crop(TF.pad(img, [4]), top, left, 32, 32)
        ref = TF.horizontal_flip(ref) if flip else ref
        assert torch.equal(out, ref.float() / 255)
    assert params["crop"].min() == 0 and params["crop"].max() == 8  # the full offset range


def test_eval__is_identity_at_input_size():
    x = (_smooth_images(4) * 255).to(torch.uint8)
    assert torch.equal(AUGMENTATIONS["none"](x, _gen()), x.float() / 255)


def test_normalize__matches_torchvision_normalize():
    x, mean, std = _smooth_images(4), [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    assert _max_diff(normalize(x, mean, std), TF.normalize(x, mean, std)) < 1e-6
    with pytest.raises(ValueError, match="3 means"):
        normalize(x, [0.5], [0.5])


# ---------------------------------------------------------------------------- registry


def test_build_augmentation__unknown_name_lists_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown augmentation 'foo'; valid: byol, moco_v2, moco_v2_imagenet, none, pad_crop, study, study_imagenet, supervised",
    ):
        build_augmentation("foo")


def test_build_augmentation__overrides_fields_and_rejects_unknown_ones():
    assert build_augmentation("moco_v2", gray_p=0.0).gray_p == 0.0
    assert AUGMENTATIONS["moco_v2"].gray_p == 0.2  # the registered default is untouched
    with pytest.raises(ValueError, match="gray_p"):
        build_augmentation("moco_v2", grey_p=0.0)


def test_register_augmentation__duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("moco_v2", SSLRecipe())


def test_ssl_recipe__rejects_bad_probability():
    with pytest.raises(ValueError, match="gray_p"):
        SSLRecipe(gray_p=1.5)


# ---------------------------------------------------------------------- per-view recipes


def _views(name: str, images: torch.Tensor, seed: int = 0, n_views: int = 2, **overrides) -> list[torch.Tensor]:
    """The training pipeline's views (no corruption, mean 0, std 1: values stay in [0, 1])."""
    pipeline = Pipeline(parse("ori"), build_augmentation(name, **overrides), n_views, (0.0,) * 3, (1.0,) * 3)
    return pipeline(images, {"corruption": _gen(99), "augment": _gen(seed)})


def test_byol__first_view_never_solarized_second_at_p_02():
    # White images without jitter or grayscale: any crop stays white, a solarized one turns black.
    white = torch.full((4000, 3, 8, 8), 255, dtype=torch.uint8)
    view1, view2 = _views("byol", white, jitter_p=0.0, gray_p=0.0)
    assert torch.equal(view1, torch.ones_like(view1))
    solarized = view2.flatten(1).amax(1) == 0
    assert torch.equal(solarized, view2.flatten(1).amin(1) == 0)  # whole images, never partly
    assert abs(solarized.float().mean().item() - 0.2) < 0.02


def test_byol__is_the_studys_per_view_recipe():
    first, second = view_recipes(AUGMENTATIONS["byol"], 2)
    assert (first.solarize_p, second.solarize_p) == (0.0, 0.2)
    assert first.saturation == second.saturation == 0.2 and first.blur_p == second.blur_p == 0.0
    assert dataclasses.replace(first, solarize_p=0.2) == second  # nothing else differs


def test_pipeline__view_i_gets_recipe_i_drawn_in_order_and_reproducibly():
    x = (_smooth_images(8) * 255).round().to(torch.uint8)
    recipes = view_recipes(AUGMENTATIONS["byol"], 2)
    g = _gen(3)
    replay = [recipes[0](x, g), recipes[1](x, g)]  # view 1 draws first, then view 2
    views = _views("byol", x, seed=3)
    assert all(torch.equal(v, r) for v, r in zip(views, replay, strict=True))
    assert all(torch.equal(v, r) for v, r in zip(_views("byol", x, seed=3), views, strict=True))
    assert not torch.equal(_views("byol", x, seed=4)[1], views[1])


def test_pipeline__one_recipe_serves_every_view():
    x = (_smooth_images(8) * 255).round().to(torch.uint8)
    g = _gen(5)
    replay = [AUGMENTATIONS["moco_v2"](x, g) for _ in range(3)]
    views = _views("moco_v2", x, seed=5, n_views=3)
    assert all(torch.equal(v, r) for v, r in zip(views, replay, strict=True))


def test_pipeline__fewer_view_recipes_than_views_raises_at_construction():
    with pytest.raises(ValueError, match="2 per-view recipes, the method needs 3 views"):
        Pipeline(parse("ori"), AUGMENTATIONS["byol"], 3, (0.0,) * 3, (1.0,) * 3)
    assert len(_views("byol", _smooth_images(2), n_views=1)) == 1  # one view: the first recipe


def test_build_augmentation__per_view_overrides_apply_to_every_view():
    recipe = build_augmentation("byol", crop_scale=(0.38, 1.0))
    assert isinstance(recipe, PerView)
    assert [v.crop_scale for v in recipe.views] == [(0.38, 1.0)] * 2
    assert [v.solarize_p for v in recipe.views] == [0.0, 0.2]  # the per-view values are kept
    with pytest.raises(ValueError, match=r"unknown option.*solarize_p"):
        build_augmentation("byol", solarise_p=0.1)


def test_per_view__called_directly_is_the_first_views_recipe():
    x, recipe = _smooth_images(4), AUGMENTATIONS["byol"]
    assert torch.equal(recipe(x, _gen()), recipe.views[0](x, _gen()))
    with pytest.raises(ValueError, match="one kind"):
        PerView((SSLRecipe(), SupervisedRecipe()))


def test_constant__made_once_per_values_dtype_and_device_and_equal_to_torch_tensor():
    from trainables.data.augment_ops import constant, move_to

    a = constant([[0, -1], [1, 0]], torch.float32, "cpu")
    assert a is constant(((0, -1), (1, 0)), torch.float32, torch.device("cpu"))  # cached: no copy per batch
    assert torch.equal(a, torch.tensor([[0, -1], [1, 0]], dtype=torch.float32))
    assert constant([0.5], torch.float64, "cpu").dtype == torch.float64
    x = torch.arange(3)
    assert move_to(x, "cpu") is x


def test_imagenet_recipes__the_study_in100_scripts_per_view_settings():
    """in100_mocov2b.sh: blur (1.0, 0.1), solarize (0.0, 0.2), saturation 0.4; in100_sup.sh: one crop, 0.2 / 0.55 / 0.1."""
    moco = build_augmentation("moco_v2_imagenet", size=224)
    assert [(v.blur_p, v.solarize_p, v.saturation, v.size) for v in moco.views] == [
        (1.0, 0.0, 0.4, 224),
        (0.1, 0.2, 0.4, 224),
    ]
    sup = build_augmentation("study_imagenet")
    assert (sup.blur_p, sup.solarize_p, sup.saturation, sup.brightness, sup.hue) == (0.55, 0.1, 0.2, 0.4, 0.1)
    view = moco.views[0](torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert view.shape == (2, 3, 224, 224)
