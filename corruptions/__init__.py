"""Batched image corruptions: what the study does to images.

Every corruption maps ``(B, C, H, W)`` uint8 (or float in [0, 1]) to the same shape, dtype and
device. Build one from a spec string or dict with :func:`parse`; the registry is
:data:`CORRUPTIONS`. Importing this package registers the built-in kinds.
"""

from corruptions import cifar_c, pixel, shuffle  # noqa: F401  (registration side effects)
from corruptions.base import (
    CORRUPTIONS,
    Corruption,
    CorruptionError,
    parse,
    register_corruption,
    valid_names,
)
from corruptions.shuffle import divisors

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "CorruptionError",
    "divisors",
    "parse",
    "register_corruption",
    "valid_names",
]
