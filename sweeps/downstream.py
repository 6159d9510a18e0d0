"""Downstream setting: pretrain on clean data (or take a checkpoint), then probe on corrupted data.

    python sweeps/downstream.py --methods supervised moco_v2        # stage 1 + stage 2
    python sweeps/downstream.py --methods moco_v2 --set model.init_checkpoint=/path/state.pt
    python sweeps/downstream.py --methods dino --set model.pretrained=true --set model.backbone=vit_small_patch16_224.dino ...

Stage 1 pretrains every method x seed on ``ori`` (Tune/MLflow experiment ``<experiment>-pretrain``;
run again, it resumes and keeps what finished). Stage 2 (experiment ``<experiment>``) evaluates
each pretrained backbone frozen on every corruption (default: ori, glo_4, glo_8, loc_4, loc_8):
kNN, linear probe, ECE and feature geometry on the corrupted splits (``optim.epochs: 0`` with
``model.init_checkpoint``). With ``--set model.init_checkpoint=...`` (one of our checkpoints) or
``--set model.pretrained=true`` (timm's weights for ``model.backbone``, e.g. ``vit_small_patch16_224.dino``:
cached by timm, or downloaded) stage 1 is skipped; the untrained references stay untrained.
The study fine-tuned ImageNet-pretrained nets on corrupted CIFAR-10 (docs/study.md §2.3-2.4);
``eval.finetune: true`` (YAML ``trial:`` or ``--set``) adds that protocol to stage 2: each pretrained
network, plus a new linear head, trained whole on the corrupted training split (``finetune_acc``;
``eval.finetune_*`` keys in docs/configuration.md), beside the frozen probe. Stage 1 never fine-tunes.
Budget and corruptions: sweeps/configs/downstream.yaml.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path

from sweeps.launch import TABLE1, Sweep, main, prepare, untrained_cells
from sweeps.options import SweepError, SweepOptions, build_parser

INIT = "model.init_checkpoint"
TIMM = "model.pretrained"


def probe_corruptions(opts: SweepOptions, size: tuple[int, int]) -> list[str]:
    return [str(c) for c in opts.get("corruptions") or TABLE1]


def probe_cells(checkpoints: dict[tuple[str, int], str] | None):
    """Cells -> frozen probes: epochs 0 from the checkpoint of the same method and seed."""

    def edit(opts: SweepOptions, cells: list[dict]) -> list[dict]:
        out = []
        for cell in cells:
            path = cell.get(INIT) if checkpoints is None else checkpoints.get((cell["method"], cell["system.seed"]))
            if not path and checkpoints is None and cell.get(TIMM):  # timm's weights: nothing to load of ours
                out.append({**cell, "optim.epochs": 0})
                continue
            if not path:
                have = ", ".join(f"{m}/seed {s}" for m, s in sorted(checkpoints or {})) or "none"
                raise SweepError(
                    f"no pretrained checkpoint for {cell['method']} seed {cell['system.seed']}; found: {have}"
                )
            if not Path(path).is_file():
                raise SweepError(f"{INIT} {path!r} does not exist; valid: a state.pt written by a trial")
            out.append({**cell, INIT: str(Path(path).resolve()), "optim.epochs": 0})
        return out

    return edit


def references(opts: SweepOptions, cells: list[dict]) -> list[dict]:
    """The untrained reference per corruption x seed (``include_untrained``): no checkpoint."""
    return [{**c, INIT: None, TIMM: False, "model.pretrained_file": None} for c in untrained_cells(opts, cells)]


PRETRAIN = Sweep("downstream", __doc__, lambda opts, size: ["ori"], frozenset({"corruptions", "include_untrained"}))


def probe_sweep(checkpoints: dict[tuple[str, int], str] | None) -> Sweep:
    return Sweep(
        "downstream",
        __doc__,
        probe_corruptions,
        frozenset({"corruptions", "include_untrained"}),
        extra_cells=references,
        edit_cells=probe_cells(checkpoints),
    )


def pretrained(folder: Path) -> dict[tuple[str, int], str]:
    """(method, seed) -> final checkpoint of each finished stage-1 trial."""
    from analysis.collect import load_tune

    df = load_tune(folder)
    return {(r["method"], int(r["system.seed"])): r["checkpoint"] for _, r in df.iterrows() if r.get("checkpoint")}


def without_resume(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--resume`` or an abbreviation argparse takes for it (``--res``)."""
    return [a for a in argv if not (a.startswith("--r") and "--resume".startswith(a))]


def stage_argv(
    base: list[str], resume: bool, dry_run: bool, storage: Path, experiment: str
) -> tuple[list[str], list[str]]:
    """Each stage's command line from ``base`` (no ``--resume``): a stage 1 that has begun always
    continues (``--resume`` added; not in a dry run unless asked); stage 2 continues when asked to
    (``resume``) and it has begun, and starts afresh when it has not (stage 1 was interrupted). Stage
    1 trains only: fine-tuning (``eval.finetune``) and the probe belong to stage 2."""
    pretrain = f"{experiment}-pretrain"
    stage1 = [*base, "--experiment", pretrain, "--set", "eval.probe=false", "--set", "eval.finetune=false"]
    if (storage / pretrain).exists() and (resume or not dry_run):
        stage1.append("--resume")
    return stage1, [*base, *(["--resume"] if resume and (storage / experiment).exists() else [])]


def run(argv: Sequence[str]) -> int:
    """Both stages (or stage 2 alone when ``model.init_checkpoint`` or ``model.pretrained`` is set)."""
    argv = list(argv)
    args = build_parser(__doc__, "downstream").parse_args(argv)
    base = without_resume(argv)
    # Names and storage exactly as the launcher resolves them (YAML dataset and trial keys included).
    with contextlib.redirect_stderr(io.StringIO()) as said:  # its dry-run warnings: each stage prints its own
        plan, _ = prepare(PRETRAIN, [*base, "--dry-run"])
    sys.stderr.write("".join(line for line in said.getvalue().splitlines(True) if not line.startswith("warning: ")))
    given = all(cell.get(INIT) or cell.get(TIMM) for cell in plan.cells)
    storage, experiment = plan.storage, plan.experiment
    del plan  # it holds the decoded dataset; each stage loads its own
    stage1, stage2 = stage_argv(base, args.resume, args.dry_run, storage, experiment)
    if given:  # the networks are given: nothing to pretrain
        print("stage 1: skipped (model.init_checkpoint or model.pretrained gives every network)", flush=True)
        return main(probe_sweep(None), stage2)
    print(f"stage 1: pretraining on clean data ({experiment}-pretrain)", flush=True)
    code = main(PRETRAIN, stage1)
    if code != 0 or args.dry_run:
        if args.dry_run:
            print("stage 2: each pretrained backbone probed (frozen) on every corruption; needs stage 1's checkpoints")
        return code
    print(f"stage 2: frozen probes on corrupted data ({experiment})", flush=True)
    return main(probe_sweep(pretrained(storage / f"{experiment}-pretrain")), stage2)


def cli(argv: list[str] | None = None) -> int:
    """``sbl-sweep downstream`` and ``python sweeps/downstream.py``."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
