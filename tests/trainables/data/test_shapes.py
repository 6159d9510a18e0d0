"""The procedurally drawn ``shapes`` dataset: deterministic, balanced, cached by version, and
with its class in spatial structure, not in colour or pixel statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import shapes
from trainables.data.datasets import SHAPES_TEST_PER_CLASS, SHAPES_TRAIN_PER_CLASS, load_dataset


@pytest.fixture(scope="module")
def drawn():
    return shapes.render(30, seed=0)


def test_render__same_seed_same_bytes_other_seed_other_images(drawn):
    images, labels = drawn
    again, again_labels = shapes.render(30, seed=0)
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    assert not np.array_equal(images, shapes.render(30, seed=1)[0])


def test_render__balanced_interleaved_uint8_rgb(drawn):
    images, labels = drawn
    assert images.shape == (300, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [30] * 10 and labels[:12].tolist() == [*range(10), 0, 1]
    assert shapes.render(2, seed=0, size=16)[0].shape == (20, 3, 16, 16)


def test_segments__every_shape_has_the_same_ink_area_at_scale_1():
    one, centre = torch.ones(1, dtype=torch.float64), torch.full((1, 2), 32.0, dtype=torch.float64)
    ink = [float(shapes._coverage(shapes._segments(n, 64), one, 0 * one, centre, 64).sum()) for n in shapes.CLASSES]
    assert ink == pytest.approx([np.mean(ink)] * 10, rel=0.02)
    raw = [
        float(shapes._coverage(shapes._unit_segments(n, 64), one, 0 * one, centre, 64).sum()) for n in shapes.CLASSES
    ]
    assert max(raw) / min(raw) > 1.1  # without the correction, crossings and line ends would tell classes apart


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Train on the first half, test on the second (chance: 10%)."""
    half = len(labels) // 2
    centroids = np.stack([features[:half][labels[:half] == c].mean(0) for c in range(10)])
    guess = ((features[half:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((guess == labels[half:]).mean())


def test_render__class_is_not_in_colour_nor_in_pixel_statistics_but_in_spatial_structure(drawn):
    images, labels = drawn
    x = images.reshape(len(images), 3, -1).astype(np.float64)
    ink = np.abs(x - np.median(x, -1, keepdims=True)).sum(1)  # (N, H*W) how far each pixel is from the background
    colour = x.mean(-1)  # (N, 3)
    histogram = np.sort(ink, axis=1)[:, ::16]  # what any pixel shuffle keeps
    # The power spectrum of the ink is translation-invariant: the shape without its position.
    spectrum = np.log1p(np.abs(np.fft.rfft2(ink.reshape(-1, 32, 32) / ink.sum(1)[:, None, None])) ** 2).reshape(
        len(x), -1
    )
    assert _nearest_centroid_accuracy(colour, labels) < 0.2
    assert _nearest_centroid_accuracy(histogram, labels) < 0.2
    assert _nearest_centroid_accuracy(spectrum, labels) > 0.3


def test_load_dataset__registered_split_sizes_and_a_cache_key_with_the_version(tmp_path, monkeypatch):
    data = load_dataset("shapes", cache_dir=tmp_path)
    assert (
        data.train.images.shape == (10 * SHAPES_TRAIN_PER_CLASS, 3, 32, 32)
        and data.train.images.dtype.is_floating_point is False
    )
    assert len(data.test) == 10 * SHAPES_TEST_PER_CLASS and data.classes == shapes.CLASSES
    assert not np.array_equal(data.train.images[:10].numpy(), data.test.images[:10].numpy())
    assert [p.name.startswith("shapes-") for p in tmp_path.iterdir()] == [True]
    render = shapes.render
    monkeypatch.setattr(shapes, "VERSION", "shapes-test-bump")
    monkeypatch.setattr(shapes, "render", lambda n, seed, size: render(1, seed, size))  # the key, not the drawing
    bumped = load_dataset("shapes", cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2 and len(bumped.train) == 10
