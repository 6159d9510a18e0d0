"""Gamma's exact uint8 formula and the CIFAR-10-C corruptions against their definitions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from corruptions import parse
from corruptions.cifar_c import defocus_kernel


@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.5, 2, 2.5, 5])
def test_gamma__equals_study_uint8_formula(gamma, images_u8):
    x = images_u8.numpy()
    expected = (255 * (x / 255) ** gamma).astype(np.uint8)
    np.testing.assert_array_equal(parse(f"gam_{gamma}")(images_u8).numpy(), expected)


def test_gamma__float_path_is_the_continuous_formula(images_u8):
    x = images_u8.float() / 255
    torch.testing.assert_close(parse("gam_0.2")(x), x**0.2)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_defocus__kernel_is_normalised_and_symmetric(severity):
    from corruptions.cifar_c import DEFOCUS

    k = defocus_kernel(*DEFOCUS[severity - 1])
    assert abs(k.sum().item() - 1) < 1e-6
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)


def test_defocus__matches_scipy_correlation_with_reflect101(images_u8):
    from corruptions.cifar_c import DEFOCUS

    kernel = defocus_kernel(*DEFOCUS[2]).double().numpy()
    x = images_u8.numpy() / 255.0
    # scipy's 'mirror' border is cv2's BORDER_REFLECT_101, which CIFAR-10-C's filter2D uses.
    ref = np.stack([[ndimage.correlate(ch, kernel, mode="mirror") for ch in img] for img in x])
    expected = np.uint8(np.clip(ref, 0, 1) * 255)
    ours = parse("defocusblur_3")(images_u8).numpy()
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_shot_noise__unbiased_and_severity_ordered():
    x = torch.full((64, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    mild, severe = parse("shotnoise_1")(x, g), parse("shotnoise_5")(x, g)
    assert abs(mild.mean().item() - 0.5) < 0.01 and abs(severe.mean().item() - 0.5) < 0.01
    # Poisson(c x)/c has variance x / c: severity 5 (c=50) is noisier than severity 1 (c=500).
    assert severe.var().item() == pytest.approx(0.5 / 50, rel=0.1)
    assert mild.var().item() == pytest.approx(0.5 / 500, rel=0.1)


def test_jpeg__close_to_pil_at_the_same_quality(images_u8):
    smooth = torch.nn.functional.avg_pool2d(images_u8.float(), 3, 1, 1).round().to(torch.uint8)
    ours = parse("jpeg_3")(smooth).numpy().astype(int)
    for img, mine in zip(smooth.permute(0, 2, 3, 1).numpy(), ours, strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=58)
        pil = np.asarray(Image.open(buf)).transpose(2, 0, 1).astype(int)
        assert np.abs(pil - mine).mean() < 1.0
