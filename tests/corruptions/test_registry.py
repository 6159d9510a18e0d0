"""Contract tests over every registered corruption: adding one to the registry enrolls it here."""

from __future__ import annotations

import pytest
import torch

import corruptions
from corruptions import CORRUPTIONS, CorruptionError, parse
from tests.conftest import devices

EXAMPLES = sorted({spec for cls in set(CORRUPTIONS.values()) for spec in cls.examples})


def test_registry__every_spec_name_has_an_example():
    covered = {parse(spec).spec_name for spec in EXAMPLES}
    assert covered == set(CORRUPTIONS)


def test_registry__study_names_present():
    expected = {"ori", "glo", "loc", "randglo", "randloc", "gam", "defocusblur", "shotnoise", "jpeg"}
    assert expected <= set(CORRUPTIONS)


def test_registry__duplicate_name_raises():
    with pytest.raises(ValueError, match="glo"):
        corruptions.register_corruption(type(parse("glo_2")))


@pytest.mark.parametrize("spec", EXAMPLES)
def test_parse__string_round_trip(spec):
    assert str(parse(spec)) == spec


@pytest.mark.parametrize("spec", EXAMPLES)
def test_parse__dict_round_trip(spec):
    c = parse(spec)
    assert parse(c.to_dict()) == c
    assert parse(dict(c.to_dict())).to_dict() == c.to_dict()


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("spec", EXAMPLES)
def test_corruption__shape_dtype_device_kept(spec, dtype, device, images_u8):
    x = images_u8.to(device)
    x = x if dtype == torch.uint8 else x.float() / 255
    y = parse(spec)(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    if dtype != torch.uint8:
        assert 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("spec", EXAMPLES)
def test_corruption__reproducible_from_generator(spec, images_u8):
    c = parse(spec)
    a = c(images_u8, torch.Generator().manual_seed(3))
    b = c(images_u8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_corruption__declared_identity_is_exact(spec, images_u8):
    identity = type(parse(spec)).identity(32, 32)
    assert identity is not None
    for x in (images_u8, images_u8.float() / 255):
        assert torch.equal(identity(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("spec", [s for s in EXAMPLES if s != "ori"])
def test_corruption__non_identity_changes_images(spec, images_u8):
    assert not torch.equal(parse(spec)(images_u8, torch.Generator().manual_seed(0)), images_u8)


@pytest.mark.parametrize("spec", EXAMPLES)
def test_corruption__fixed_ones_ignore_the_generator(spec, images_u8):
    c = parse(spec)
    a = c(images_u8, torch.Generator().manual_seed(1))
    b = c(images_u8, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) == c.fixed


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("glo_x", ["'glo_x'", "valid"]),
        ("gam_-1", ["-1", "valid", "> 0"]),
        ("blur_3", ["'blur_3'", "defocusblur", "glo", "loc", "gam"]),
        ("jpeg_9", ["9", "valid", "1, 2, 3, 4, 5"]),
        ("loc_4:mode=x", ["mode", "'x'"]),
        ("glo_2:color=red", ["color", "valid", "seed"]),
        ("ori_3", ["ori"]),
    ],
)
def test_parse__bad_spec_names_value_and_choices(spec, named):
    with pytest.raises(CorruptionError) as err:
        parse(spec)
    message = str(err.value)
    assert "\n" not in message
    for piece in named:
        assert piece in message


def test_check__grid_not_dividing_image_lists_valid_grids():
    with pytest.raises(CorruptionError) as err:
        parse("glo_7")(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert "glo_7" in str(err.value) and "1, 2, 4, 8, 16, 32" in str(err.value)
    with pytest.raises(CorruptionError, match="valid grids: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96"):
        parse("loc_5").check(96, 96)
