"""The study's Table 1 as a preset: methods x {ori, glo_4, glo_8, loc_4, loc_8} x seeds.

    python sweeps/paper_table1.py --budget gpu --address auto            # the study's scale
    python sweeps/paper_table1.py --budget cpu                           # 2 CPU cores, real CIFAR-10

--budget picks sweeps/configs/paper_table1_<budget>.yaml (default: cpu); --config replaces it
and every other flag overrides it as in the other sweeps.
  gpu: ResNet-18, 200 epochs, batch 256, all of CIFAR-10 (torchvision), 6 methods, 3 seeds,
       0.25 GPU per trial (4 trials per GPU).
  cpu: quarter-width ResNet-18 on a CIFAR-10 subset, settings found with sweeps/tune_hparams.py
       (docs/results/cifar10-cpu.md records the search); supervised and moco_v2.
``extra_seeds: {ori: [1], glo_4: [1]}`` in the YAML adds seeds for some corruptions only;
``include_untrained`` adds the epochs-0 reference of every corruption x seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

from sweeps.grid_patch_sizes import untrained_cells  # noqa: E402
from sweeps.launch import Sweep, main  # noqa: E402
from sweeps.options import CONFIG_DIR, SweepError  # noqa: E402

BUDGETS = ("cpu", "gpu")
TABLE1 = ("ori", "glo_4", "glo_8", "loc_4", "loc_8")


def corruptions(opts: dict, size: tuple[int, int]) -> list[str]:
    """The YAML's ``corruptions`` (default: Table 1's five), ``ori`` first."""
    specs = [str(c) for c in opts.get("corruptions") or TABLE1]
    return ["ori", *[c for c in specs if c != "ori"]] if "ori" in specs else specs


def more_cells(opts: dict, cells: list[dict]) -> list[dict]:
    """``extra_seeds`` copies of some corruptions' cells, then the untrained references."""
    extra = opts.get("extra_seeds") or {}
    present = sorted({c["data.corruption"] for c in cells})
    unknown = sorted(set(extra) - set(present))
    if unknown:
        raise SweepError(f"extra_seeds: corruption(s) {', '.join(unknown)} are not in this sweep; valid: {', '.join(present)}")
    added = [{**c, "system.seed": int(s)} for c in cells for s in extra.get(c["data.corruption"]) or []
             if int(s) not in opts["seeds"]]
    return added + untrained_cells(opts, cells + added)


def with_budget(argv: list[str]) -> list[str]:
    """``--budget B`` -> ``--config sweeps/configs/paper_table1_B.yaml`` (unless --config is given)."""
    argv = list(argv)
    budget = "cpu"
    if "--budget" in argv:
        i = argv.index("--budget")
        if i + 1 >= len(argv) or argv[i + 1] not in BUDGETS:
            value = argv[i + 1] if i + 1 < len(argv) else "(none)"
            raise SweepError(f"--budget {value!r} is invalid; valid: {', '.join(BUDGETS)}")
        budget = argv[i + 1]
        del argv[i : i + 2]
    if "--config" not in argv:
        argv += ["--config", str(CONFIG_DIR / f"paper_table1_{budget}.yaml")]
    return argv


SWEEP = Sweep("paper_table1", __doc__, corruptions, frozenset({"corruptions", "extra_seeds", "include_untrained"}),
              extra_cells=more_cells)

if __name__ == "__main__":
    try:
        args = with_budget(sys.argv[1:])
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(SWEEP, args))
