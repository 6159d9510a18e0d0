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

import torch

from trainables.config import TrialConfig, parse_assignment
from trainables.data.datasets import check_dataset

SHORTCUTS = {  # flag -> flat key; the value's type is the config field's (TrialConfig converts it)
    "method": "method",
    "dataset": "data.dataset",
    "corruption": "data.corruption",
    "eval_corruption": "data.eval_corruption",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "backbone": "model.backbone",
    "width": "model.width",
    "seed": "system.seed",
    "device": "system.device",
    "precision": "system.precision",
    "image_size": "data.image_size",
    "train_per_class": "data.train_per_class",
    "test_per_class": "data.test_per_class",
}


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: ...``), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m trainables.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    for (
        name,
        key,
    ) in SHORTCUTS.items():  # the text as given: converted like --set (1e3 is 1000) or refused naming the key
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"sets {key}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any flat config key (repeatable)")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="save the resumable state here every epoch; resume from it if it exists",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved flat config and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the trial diverged, 2 bad input (one line ``error: ...``), 130 interrupted."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except FloatingPointError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    except ValueError as err:  # bad input found while the trial runs: grid vs image size, dataset, checkpoint
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted (Ctrl+C)"
            + (f"; rerun with --checkpoint {args.checkpoint} to resume" if args.checkpoint else ""),
            file=sys.stderr,
        )
        return 130


def _run(args: argparse.Namespace) -> int:
    flat = {key: getattr(args, name) for name, key in SHORTCUTS.items() if getattr(args, name) is not None}
    flat.update(parse_assignment(s) for s in args.set)
    cfg = TrialConfig.from_flat(flat).resolved()
    if args.print_config:
        print(json.dumps(cfg.to_flat(), indent=1))
        return 0
    check_dataset(cfg.data.dataset, cfg.data.data_dir)
    resume = None
    if args.checkpoint and args.checkpoint.exists():
        resume = load_checkpoint(args.checkpoint, cfg)
        print(f"resuming from {args.checkpoint} at epoch {resume['epoch']}", file=sys.stderr)

    def save(state: dict) -> None:
        tmp = args.checkpoint.with_suffix(".tmp")
        torch.save({**state, "config": cfg.to_flat()}, tmp)
        tmp.replace(args.checkpoint)

    def report(metrics: dict) -> None:
        scalars = {
            k: v for k, v in metrics.items() if "/" not in k and not isinstance(v, list)
        }  # per-class values: JSON only
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
        print(shown, file=sys.stderr, flush=True)

    from trainables.loop import run_trial  # imported late: --help stays fast

    final = run_trial(cfg, report, resume=resume, save=save if args.checkpoint else None)
    print(json.dumps(final))
    return 0


STATE_KEYS = ("epoch", "step", "history", "method", "optimizer", "generators")
# Keys a resumed trial may change: where files live and which device runs it, not what it computes.
RESUMABLE_CHANGES = (
    "data.data_dir",
    "data.cache_dir",
    "data.memory_budget_gb",
    "data.stream_workers",
    "system.device",
    "system.compile",
    "system.checkpoint_every",
)


def load_checkpoint(path: Path, cfg: TrialConfig) -> dict:
    """The state saved by an earlier run of this command with the same config; ValueError otherwise
    (not a file, not a checkpoint, or a config differing in any key but ``RESUMABLE_CHANGES``)."""
    valid = "valid: a file written by --checkpoint with the same config, or a new --checkpoint path"
    if not path.is_file():
        raise ValueError(f"--checkpoint {str(path)!r} is not a file; {valid}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, KeyError, RuntimeError, EOFError... on a foreign file
        detail = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"--checkpoint {str(path)!r} is not a checkpoint (torch.load: {type(err).__name__} {detail}); {valid}"
        ) from None
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        raise ValueError(
            f"--checkpoint {str(path)!r} is not a checkpoint of this command (no {', '.join(STATE_KEYS)}); {valid}"
        )
    recorded, current = state.get("config"), cfg.to_flat()
    if recorded is not None:  # checkpoints from before the config was saved are taken as they are
        for key in [*current, *(k for k in recorded if k not in current)]:
            if key not in RESUMABLE_CHANGES and recorded.get(key) != current.get(key):
                raise ValueError(
                    f"--checkpoint {str(path)!r} was made with {key} {recorded.get(key)!r}, this run has "
                    f"{current.get(key)!r}; {valid}"
                )
    return state


if __name__ == "__main__":
    sys.exit(main())
