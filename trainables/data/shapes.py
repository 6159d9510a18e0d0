"""``shapes``: a small procedurally drawn dataset whose class lives in spatial structure only.

Ten classes of line drawings (ring, square, triangle, plus, X, =, ||, L, T, V), each drawn with an
anti-aliased stroke at a random position, scale and rotation (within ±20°, so that plus/X and
=/|| stay apart), light grey on dark grey with per-pixel noise. What a class does *not* change:

* colour and brightness: every image has the same two grey levels;
* per-pixel statistics: every template has the same ink area at scale 1 (``STROKE_LENGTH`` of
  stroke, lengthened where strokes cross or join), and scale is drawn from a wide range, so the
  number of stroke pixels (what survives a pixel shuffle's histogram) says little about the class.

So a corruption that scatters pixels or patches must cost accuracy. With the study's *fixed*
permutation (one for the whole dataset) a shape at another position lands in an unrelated set of
patches, so a CNN loses the locality and translation equivariance it relies on, while a shuffle of
upsampled 8x8 digits is only a fixed permutation of the 64 source pixels, which it learns as easily
as the original.

Deterministic: ``render(n, seed)`` draws everything from one ``torch.Generator`` (no download, no
global RNG). ``VERSION`` is part of the cache key: bump it whenever the drawing changes.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
from torch import Tensor

VERSION = "shapes-v1"
SIZE = 32
# Lengths are in image sides, so a canvas of another size draws the same scenes at its resolution.
STROKE_LENGTH = 1.25  # total stroke of a shape at scale 1 (40 px at 32 px)
SCALE_RANGE = (0.6, 1.0)  # stroke length (and extent) multiplier
MAX_ROTATION = math.radians(20)
STROKE_WIDTH = 0.15  # 2.4 px at 16 px
NOISE_STD = 0.05  # per pixel and channel, in [0, 1] units
# One grey level each, not random hues or levels: in a short run the SSL arm learns whatever tells one
# image from another most easily, and a random background colour or grey level does (16 px, 3 epochs:
# MoCo v2's kNN sat below or near the untrained network's with random hues or levels, and well above it
# with fixed ones). The class never depended on colour either way.
BACKGROUND, FOREGROUND = 0.2, 0.8


def _ring(k: int = 24) -> list[list[tuple[float, float]]]:
    return [[(math.cos(2 * math.pi * i / k), math.sin(2 * math.pi * i / k)) for i in range(k + 1)]]


# Polylines in unit coordinates (x right, y down), centred on the origin, extent about [-1, 1].
TEMPLATES: dict[str, list[list[tuple[float, float]]]] = {
    "ring": _ring(),
    "square": [[(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]],
    "triangle": [[(0, -1), (0.9, 0.6), (-0.9, 0.6), (0, -1)]],
    "plus": [[(-1, 0), (1, 0)], [(0, -1), (0, 1)]],
    "x": [[(-0.75, -0.75), (0.75, 0.75)], [(-0.75, 0.75), (0.75, -0.75)]],
    "equals": [[(-1, -0.45), (1, -0.45)], [(-1, 0.45), (1, 0.45)]],
    "bars": [[(-0.45, -1), (-0.45, 1)], [(0.45, -1), (0.45, 1)]],
    "ell": [[(-0.6, -1), (-0.6, 0.9), (0.8, 0.9)]],
    "tee": [[(-1, -0.9), (1, -0.9)], [(0, -0.9), (0, 1)]],
    "vee": [[(-0.9, -0.9), (0, 0.9), (0.9, -0.9)]],
}
CLASSES = tuple(TEMPLATES)


def _unit_segments(name: str, size: int) -> Tensor:
    """(S, 4) segments ``x0, y0, x1, y1`` of a template in px, ``STROKE_LENGTH * size`` px of stroke in all."""
    seg = torch.tensor([[*a, *b] for line in TEMPLATES[name] for a, b in itertools.pairwise(line)], dtype=torch.float64)
    length = (seg[:, 2:] - seg[:, :2]).norm(dim=1).sum()
    return seg * (STROKE_LENGTH * size / length)


@functools.cache
def _ink_scale(name: str) -> float:
    """Length multiplier that gives the template the mean ink area of all templates.

    Equal stroke length is not equal ink: strokes overlap where they cross or join (plus, X, T).
    Measured once on a fine canvas, where ink ~ length x width - overlap; two Newton steps.
    """
    canvas = 256
    one, centre = torch.ones(1, dtype=torch.float64), torch.full((1, 2), canvas / 2, dtype=torch.float64)

    def ink(n: str, k: float) -> float:
        return float(_coverage(_unit_segments(n, canvas), k * one, 0 * one, centre, canvas).sum())

    target = sum(ink(n, 1.0) for n in CLASSES) / len(CLASSES)
    per_length = STROKE_LENGTH * canvas * STROKE_WIDTH * canvas  # d ink / d k
    k = 1.0
    for _ in range(2):
        k += (target - ink(name, k)) / per_length
    return k


def _segments(name: str, size: int) -> Tensor:
    """(S, 4) template segments in px at scale 1, every template with the same ink area."""
    return _unit_segments(name, size) * _ink_scale(name)


def _coverage(segments: Tensor, scale: Tensor, angle: Tensor, centre: Tensor, size: int) -> Tensor:
    """Anti-aliased stroke coverage in [0, 1] of each image's shape.

    Args:
        segments: (S, 4) template segments in px at scale 1, centred on the origin.
        scale, angle: (B,) per-image scale and rotation (radians).
        centre: (B, 2) per-image centre (x, y) in px.

    Returns:
        (B, size, size) float64.
    """
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]

    def place(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:  # (S,) -> (B, S) each
        x, y = scale[:, None] * x, scale[:, None] * y
        return cos * x - sin * y + centre[:, :1], sin * x + cos * y + centre[:, 1:]

    ax, ay = place(segments[:, 0], segments[:, 1])
    bx, by = place(segments[:, 2], segments[:, 3])
    pix = torch.arange(size, dtype=torch.float64) + 0.5
    px, py = pix.view(1, 1, 1, size), pix.view(1, 1, size, 1)  # (1, 1, H, W) after broadcasting
    ax, ay, bx, by = (t[..., None, None] for t in (ax, ay, bx, by))  # (B, S, 1, 1)
    dx, dy = bx - ax, by - ay
    t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-9)).clamp(0, 1)
    dist = ((px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2).sqrt().amin(dim=1)  # (B, H, W)
    return (STROKE_WIDTH * size / 2 + 0.5 - dist).clamp(0, 1)


def _draw(name: str, n: int, g: torch.Generator, size: int) -> Tensor:
    """(n, 3, size, size) uint8 drawings of one class."""
    segments = _segments(name, size)
    scale = torch.empty(n, dtype=torch.float64).uniform_(*SCALE_RANGE, generator=g)
    angle = torch.empty(n, dtype=torch.float64).uniform_(-MAX_ROTATION, MAX_ROTATION, generator=g)
    # Keep the whole (rotated, scaled) shape inside the image: its radius bounds the centre.
    radius = scale * segments.view(-1, 2).norm(dim=1).max() + STROKE_WIDTH * size
    low, high = radius, size - radius
    centre = low[:, None] + (high - low)[:, None] * torch.rand(n, 2, generator=g, dtype=torch.float64)
    alpha = _coverage(segments, scale, angle, centre, size)[:, None]  # (n, 1, H, W)
    noise = NOISE_STD * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    images = BACKGROUND * (1 - alpha) + FOREGROUND * alpha + noise
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def render(n_per_class: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` drawings of every class, classes interleaved (0, 1, ..., 9, 0, 1, ...).

    Args:
        n_per_class: images per class.
        seed: the only source of randomness; the same seed gives the same bytes.
        size: image side in px (shapes are sized relative to it: the same scenes at another resolution).

    Returns:
        images (N, 3, size, size) uint8 and labels (N,) int64, N = 10 * n_per_class.
    """
    g = torch.Generator().manual_seed(seed)
    per_class = []
    for name in CLASSES:
        chunks = [_draw(name, min(256, n_per_class - i), g, size) for i in range(0, n_per_class, 256)]
        per_class.append(torch.cat(chunks) if chunks else torch.empty(0, 3, size, size, dtype=torch.uint8))
    images = torch.stack(per_class, dim=1).flatten(0, 1)  # (n, C, ...) -> interleaved by class
    labels = torch.arange(len(CLASSES)).repeat(n_per_class)
    return images.numpy(), labels.numpy()
