"""Gamma-distortion study: methods x gamma x seeds (gamma 1 is the clean baseline, ``ori``).

    python sweeps/gamma.py --methods supervised moco_v2 --seeds 0 1

Gammas default to {0.1, 0.2, 0.5, 1, 2, 2.5, 5}; sweeps/configs/gamma.yaml holds the budget
and ``include_untrained`` (the epochs-0 reference trials, as in grid_patch_sizes.py).
"""

from __future__ import annotations

import sys

from sweeps.launch import Sweep, main, untrained_cells
from sweeps.options import SweepOptions

DEFAULT_GAMMAS = (0.1, 0.2, 0.5, 1, 2, 2.5, 5)


def corruptions(opts: SweepOptions, size: tuple[int, int]) -> list[str]:
    """``ori`` for gamma 1, ``gam_<g>`` for the others."""
    gammas = opts.get("gammas") or DEFAULT_GAMMAS
    return ["ori"] + [f"gam_{g:g}" for g in gammas if float(g) != 1.0]


SWEEP = Sweep("gamma", __doc__, corruptions, frozenset({"gammas", "include_untrained"}), extra_cells=untrained_cells)


def cli(argv: list[str] | None = None) -> int:
    """``sbl-sweep gamma`` and ``python sweeps/gamma.py``: exit code of ``sweeps.launch.main``."""
    return main(SWEEP, argv)


if __name__ == "__main__":
    sys.exit(cli())
