"""The study's Table 1 as a preset: methods x {ori, glo_4, glo_8, loc_4, loc_8} x seeds.

    python sweeps/paper_table1.py --budget gpu --address auto            # the study's scale
    python sweeps/paper_table1.py --budget cpu                           # 2 CPU cores, real CIFAR-10

--budget picks sweeps/configs/paper_table1_<budget>.yaml (default: cpu); --config replaces it
and every other flag overrides it as in the other sweeps.
  gpu: the study's scripts per method (ResNet-18, 200 epochs, SupCon 400, batch 256), all of
       CIFAR-10 (torchvision), 6 methods, 3 seeds, 0.5 GPU per trial (2 trials per GPU).
  cpu: quarter-width ResNet-18 on a CIFAR-10 subset, settings found with sweeps/tune_hparams.py
       (docs/results/archive/cifar10-cpu-history.md records the search, docs/results/cifar10-cpu.md
       the results); supervised, moco_v2 and the accuracy-matched supervised@20.
``extra_seeds: {ori: [1], glo_4: [1]}`` in the YAML adds seeds for some corruptions only;
``extra_arms: [{method: supervised, data.labels_per_class: 100}]`` adds a copy of a method's
trials with other settings (the accuracy-matched supervised arm); ``include_untrained`` adds the
epochs-0 reference of every corruption x seed. ``deviations`` documents where a preset knowingly
differs from the study's scripts: a list of ``{key, ours, study, reason}`` (optionally ``methods``),
checked for shape here and for truth by tests/sweeps/test_paper_gpu_preset.py; it changes no trial.
"""

from __future__ import annotations

import sys

from sweeps.launch import TABLE1, Sweep, main, untrained_cells
from sweeps.options import Flag, SweepError, SweepOptions

BUDGETS = ("cpu", "gpu", "gpu_check")


DEVIATION_FIELDS = ("key", "ours", "study", "reason")


def check_deviations(entries: object) -> None:
    """The YAML's ``deviations``: a list of mappings with ``key``, ``ours``, ``study`` and a non-empty
    ``reason``, and optionally ``methods`` (registered method names). Raises SweepError naming the entry."""
    if entries is None:
        return
    from trainables.methods import METHODS

    if not isinstance(entries, list):
        raise SweepError(
            f"deviations must be a list of {{{', '.join(DEVIATION_FIELDS)}}} mappings, got {type(entries).__name__}"
        )
    for i, entry in enumerate(entries):
        fields = set(entry) if isinstance(entry, dict) else set()
        missing = [f for f in DEVIATION_FIELDS if f not in fields]
        unknown = sorted(fields - {*DEVIATION_FIELDS, "methods"})
        if missing or unknown or not str(entry["reason"]).strip():
            what = (
                f"missing {', '.join(missing)}"
                if missing
                else f"unknown {', '.join(unknown)}"
                if unknown
                else "an empty reason"
            )
            raise SweepError(
                f"deviations[{i}] has {what}; valid: a mapping with {', '.join(DEVIATION_FIELDS)} "
                "(a non-empty reason) and optionally methods"
            )
        methods = entry.get("methods", [])
        if not isinstance(methods, list) or any(m not in METHODS for m in methods):
            raise SweepError(
                f"deviations[{i}] ({entry['key']}): methods {entry['methods']!r} is invalid; "
                f"valid: a list of {', '.join(sorted(METHODS))}"
            )


def corruptions(opts: SweepOptions, size: tuple[int, int]) -> list[str]:
    """The YAML's ``corruptions`` (default: Table 1's five), ``ori`` first; checks ``deviations`` first."""
    check_deviations(opts.get("deviations"))
    specs = [str(c) for c in opts.get("corruptions") or TABLE1]
    return ["ori", *[c for c in specs if c != "ori"]] if "ori" in specs else specs


def more_cells(opts: SweepOptions, cells: list[dict]) -> list[dict]:
    """``extra_seeds`` copies of some corruptions' cells, the ``extra_arms``, then the untrained references."""
    extra = opts.get("extra_seeds") or {}
    present = sorted({c["data.corruption"] for c in cells})
    if not isinstance(extra, dict):
        raise SweepError(
            f"extra_seeds {extra!r} is invalid; valid: a mapping of corruption to seeds, e.g. {{ori: [1]}}"
        )
    unknown = sorted(map(str, set(extra) - set(present)))
    if unknown:
        raise SweepError(
            f"extra_seeds: corruption(s) {', '.join(unknown)} are not in this sweep; valid: {', '.join(present)}"
        )
    for corruption, seeds in extra.items():
        if seeds is not None and (
            not isinstance(seeds, list) or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)
        ):
            raise SweepError(
                f"extra_seeds.{corruption} {seeds!r} is invalid; valid: a list of integers >= 0, e.g. [1, 2]"
            )
    added = [
        {**c, "system.seed": int(s)}
        for c in cells
        for s in extra.get(c["data.corruption"]) or []
        if int(s) not in opts["seeds"]
    ]
    arms = arm_cells(opts, cells + added)
    return added + arms + untrained_cells(opts, cells + added)


def arm_cells(opts: SweepOptions, cells: list[dict]) -> list[dict]:
    """``extra_arms``: each entry ``{method: M, <flat key>: value, ...}`` is a copy of M's cells (every
    corruption and seed) with those overrides, e.g. the accuracy-matched supervised arm
    ``{method: supervised, data.labels_per_class: 100}`` (analysis names it ``supervised@100``)."""
    out, arms = [], opts.get("extra_arms") or []
    if not isinstance(arms, list):
        raise SweepError(
            f"extra_arms {arms!r} is invalid; valid: a list of mappings, e.g. [{{method: supervised, data.labels_per_class: 20}}]"
        )
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict) or arm.get("method") not in opts["methods"]:
            got = arm.get("method") if isinstance(arm, dict) else arm
            raise SweepError(
                f"extra_arms[{i}]: method {got!r} is not swept; valid: a mapping with method "
                f"({', '.join(opts['methods'])}) and flat trial keys"
            )
        overrides = {k: v for k, v in arm.items() if k != "method"}
        out += [{**c, **overrides} for c in cells if c["method"] == arm["method"]]
    return out


BUDGET = Flag(
    "budget",
    str,
    "the preset: cpu (2 CPU cores, real CIFAR-10), gpu (the study's scale), gpu_check "
    "(the gpu preset's settings, 4 trials, for a short GPU session); picks sweeps/configs/paper_table1_<budget>.yaml unless --config is given",
    choices=BUDGETS,
    config="paper_table1_{}.yaml",
    default="cpu",
)
SWEEP = Sweep(
    "paper_table1",
    __doc__,
    corruptions,
    frozenset({"corruptions", "extra_seeds", "extra_arms", "include_untrained", "deviations"}),
    extra_cells=more_cells,
    flags=(BUDGET,),
)


def cli(argv: list[str] | None = None) -> int:
    """``sbl-sweep paper_table1`` and ``python sweeps/paper_table1.py``: ``--budget`` chooses the preset."""
    return main(SWEEP, argv)


if __name__ == "__main__":
    sys.exit(cli())
