"""Run one trial without Ray and print its final metrics as JSON (for debugging a single trial).

    python -m trainables.run --method moco_v2 --dataset digits --corruption glo_4 --epochs 2
    python -m trainables.run --method supervised --set model.width=0.25 --set optim.lr=0.1
    python -m trainables.run ... --checkpoint run.pt     # saves every epoch; resumes if present
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from trainables.config import TrialConfig

SHORTCUTS = {  # flag -> (flat key, type)
    "method": ("method", str), "dataset": ("data.dataset", str), "corruption": ("data.corruption", str),
    "eval_corruption": ("data.eval_corruption", str), "epochs": ("optim.epochs", int),
    "batch_size": ("optim.batch_size", int), "lr": ("optim.lr", float), "backbone": ("model.backbone", str),
    "width": ("model.width", float), "seed": ("system.seed", int), "device": ("system.device", str),
    "precision": ("system.precision", str), "image_size": ("data.image_size", int),
    "train_per_class": ("data.train_per_class", int), "test_per_class": ("data.test_per_class", int),
}


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (numbers, booleans, null, strings)."""
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"--set {text!r} is not key=value (e.g. optim.lr=0.1)")
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainables.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    for name, (key, kind) in SHORTCUTS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=f"sets {key}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any flat config key (repeatable)")
    p.add_argument("--checkpoint", type=Path, default=None, help="save the resumable state here every epoch; resume from it if it exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved flat config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flat = {key: getattr(args, name) for name, (key, _) in SHORTCUTS.items() if getattr(args, name) is not None}
    try:
        flat.update(parse_assignment(s) for s in args.set)
        cfg = TrialConfig.from_flat(flat).resolved()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_flat(), indent=1))
        return 0
    resume = None
    if args.checkpoint and args.checkpoint.exists():
        resume = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        print(f"resuming from {args.checkpoint} at epoch {resume['epoch']}", file=sys.stderr)

    def save(state: dict) -> None:
        tmp = args.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(args.checkpoint)

    def report(metrics: dict) -> None:
        scalars = {k: v for k, v in metrics.items() if "/" not in k and not isinstance(v, list)}  # per-class values: JSON only
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
        print(shown, file=sys.stderr, flush=True)

    from trainables.loop import run_trial  # imported late: --help stays fast

    final = run_trial(cfg, report, resume=resume, save=save if args.checkpoint else None)
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
