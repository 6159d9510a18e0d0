"""``sbl-sweep NAME [options]``: the console-script form of ``python sweeps/NAME.py [options]``.

Each sweep module exposes ``cli(argv) -> exit code``; it is imported only when chosen, so
``sbl-sweep --help`` answers without importing torch or Ray.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line summary). A new sweep script adds one line here.
SWEEPS = {
    "grid_patch_sizes": (
        "sweeps.grid_patch_sizes",
        "methods x {global, local} patch shuffling x grid sizes x seeds (the main job)",
    ),
    "gamma": ("sweeps.gamma", "methods x gamma distortion levels x seeds"),
    "paper_table1": ("sweeps.paper_table1", "the study's Table 1 cells (--budget cpu | gpu | gpu_check)"),
    "tune_hparams": ("sweeps.tune_hparams", "Optuna search of trial hyperparameters"),
    "downstream": ("sweeps.downstream", "pretrain on clean data, then probe the frozen backbone on corrupted data"),
}


def usage() -> str:
    width = max(map(len, SWEEPS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in SWEEPS.items())
    return (
        f"usage: sbl-sweep NAME [options]   (sbl-sweep NAME --help for a sweep's options)\n\nsweeps:\n{rows}\n\n"
        "e.g. sbl-sweep grid_patch_sizes --dry-run"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes as the sweep's own (0 done, 1 trials failed, 2 bad input, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SWEEPS:
        print(f"error: sweep {name!r} is unknown; valid: {', '.join(SWEEPS)}", file=sys.stderr)
        return 2
    sys.argv[0] = f"sbl-sweep {name}"  # argparse's program name in usage and errors
    return importlib.import_module(SWEEPS[name][0]).cli(rest)


if __name__ == "__main__":
    sys.exit(main())
