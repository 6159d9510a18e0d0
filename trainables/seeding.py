"""One generator per purpose, all derived from the trial seed with numpy's SeedSequence.

Purposes are named so adding one never shifts the streams of the others (a stream's seed
depends on its name, not on its position in a list), and Python's salted ``hash()`` is never used.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

PURPOSES = ("init", "order", "corruption", "augment", "eval")


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose``: SeedSequence(seed, spawn_key=(crc32(purpose),))."""
    seq = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(purpose.encode()),))
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def generators(seed: int, purposes: tuple[str, ...] = PURPOSES) -> dict[str, torch.Generator]:
    """``{purpose: CPU torch.Generator}`` seeded independently from ``seed``."""
    return {p: torch.Generator().manual_seed(derive_seed(seed, p)) for p in purposes}
