"""Patch-shuffling study: methods x {global, local} x patch grids x seeds, plus the clean baseline.

    python sweeps/grid_patch_sizes.py                       # the main job: shapes at 16 px, a few minutes on 2 cores
    python sweeps/grid_patch_sizes.py --address auto --gpus-per-trial 0.5 \\
        --dataset imagefolder:/data/cifar10 --epochs 200 --seeds 0 1 2

Grids default to every divisor of the image side (1, 2, 4, 8, 16, 32 for 32 px). Settings that
equal the clean images (glo_1, loc_<side>) are not trained twice: ``ori`` stands for them, and
loc_1 is the same permutation as glo_<side> (analysis maps both). Search space and budget:
sweeps/configs/grid_patch_sizes.yaml; flags override it. ``include_untrained: true`` there adds
the untrained reference: one ``optim.epochs: 0`` trial per corruption x seed (the backbone at
initialisation, evaluated like the others; analysis labels it ``untrained``).
"""

from __future__ import annotations

import sys

from sweeps.launch import Sweep, main, untrained_cells
from sweeps.options import SweepError, SweepOptions


def corruptions(opts: SweepOptions, size: tuple[int, int]) -> list[str]:
    """``ori`` plus every family x grid that is neither an identity nor a duplicate permutation."""
    from corruptions import CORRUPTIONS, divisors, parse

    families_valid = sorted(
        name for name, cls in CORRUPTIONS.items() if cls.main_param == "grid"
    )  # glo, loc, randglo, randloc
    h, w = size
    grids = opts.get("grids") or [d for d in divisors(h) if w % d == 0]
    families = opts.get("families") or ["glo", "loc"]
    unknown = [f for f in families if f not in families_valid]
    if unknown:
        raise SweepError(
            f"families {unknown[0]!r} is invalid; valid: {', '.join(families_valid)} (patch grids; gamma: sweeps/gamma.py)"
        )
    specs = ["ori"]
    for family in families:
        for n in grids:
            c = parse(f"{family}_{n}")
            if c == type(c).identity(h, w) or (family == "loc" and n == 1 and f"glo_{h}" in specs and h == w):
                continue
            specs.append(str(c))
    return specs


SWEEP = Sweep(
    "grid_patch_sizes",
    __doc__,
    corruptions,
    frozenset({"families", "grids", "include_untrained"}),
    extra_cells=untrained_cells,
)


def cli(argv: list[str] | None = None) -> int:
    """``sbl-sweep grid_patch_sizes`` and ``python sweeps/grid_patch_sizes.py``: exit code of ``sweeps.launch.main``."""
    return main(SWEEP, argv)


if __name__ == "__main__":
    sys.exit(cli())
