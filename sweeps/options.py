"""The common sweep CLI and the YAML search spaces it overrides.

Every sweep script takes the same flags; ``sweeps/configs/<sweep>.yaml`` holds its search space
and budget. Precedence: CLI flag > ``--smoke-test`` block of the YAML > the YAML > code defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_STORAGE = Path("runs")

# YAML keys every sweep understands (a sweep may add its own, e.g. grids, gammas).
COMMON_KEYS = {
    "dataset", "data_dir", "methods", "seeds", "epochs", "trial", "method_params", "resources",
    "max_concurrent", "smoke_test", "experiment", "max_failures",
}


class SweepError(ValueError):
    """A bad sweep input: the message is one line naming the value and the valid choices."""


def build_parser(description: str, sweep_name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--address", default=None, help="Ray cluster: 'auto', 'ray://host:10001', or omit for a local instance")
    add("--config", type=Path, default=CONFIG_DIR / f"{sweep_name}.yaml", help="YAML search space (default: %(default)s)")
    add("--dataset", help="shapes | digits | cifar10 | cifar100 | stl10 | imagefolder:<path>")
    add("--data-dir", help="folder for torchvision datasets")
    add("--methods", nargs="+", help="methods to sweep, e.g. supervised moco_v2")
    add("--epochs", type=int, help="training epochs per trial")
    add("--seeds", type=int, nargs="+", help="seeds, e.g. 0 1 2")
    add("--gpus-per-trial", type=float, help="GPU share per trial (0.25 packs 4 trials per GPU)")
    add("--cpus-per-trial", type=float, help="CPU cores per trial")
    add("--max-concurrent", type=int, help="cap on trials running at once")
    add("--storage-path", type=Path, help=f"where Tune keeps trials and checkpoints (default: ./{DEFAULT_STORAGE}; NFS or s3:// on a cluster)")
    add("--mlflow-uri", help="tracking store (default: sqlite:///<storage-path>/mlflow.db)")
    add("--experiment", help=f"experiment name in Tune and MLflow (default: {sweep_name}-<dataset>)")
    add("--resume", action="store_true", help="continue an interrupted sweep: finished trials are kept, others resume from checkpoints")
    add("--dry-run", action="store_true", help="print the trial table and resource plan, start nothing")
    add("--smoke-test", action="store_true", help="a tiny version of the sweep (the YAML's smoke_test block)")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="a flat trial config override, e.g. optim.lr=0.1 (repeatable)")
    return p


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a sweep YAML; any problem is a one-line SweepError naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SweepError(f"config {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepError(f"config {str(path)!r} is malformed YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SweepError(f"config {str(path)!r} must be a mapping of keys, got {type(data).__name__}")
    return data


def merge_options(args: argparse.Namespace, data: dict[str, Any], extra_keys: set[str]) -> dict[str, Any]:
    """YAML + smoke-test block + CLI flags -> one options dict; unknown YAML keys raise."""
    unknown = sorted(set(data) - COMMON_KEYS - extra_keys)
    if unknown:
        raise SweepError(f"config {str(args.config)!r}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(COMMON_KEYS | extra_keys))}")
    opts = {k: v for k, v in data.items() if k != "smoke_test"}
    if args.smoke_test:
        smoke = data.get("smoke_test") or {}
        opts.update({k: v for k, v in smoke.items() if k != "trial"})
        opts["trial"] = {**(opts.get("trial") or {}), **(smoke.get("trial") or {})}
    resources = dict(opts.get("resources") or {})
    flags = {
        "dataset": args.dataset, "data_dir": args.data_dir, "methods": args.methods, "epochs": args.epochs,
        "seeds": args.seeds, "max_concurrent": args.max_concurrent, "experiment": args.experiment,
    }
    opts.update({k: v for k, v in flags.items() if v is not None})
    if args.gpus_per_trial is not None:
        resources["gpu"] = args.gpus_per_trial
    if args.cpus_per_trial is not None:
        resources["cpu"] = args.cpus_per_trial
    opts["resources"] = {"cpu": float(resources.get("cpu", 1)), "gpu": float(resources.get("gpu", 0))}
    trial = dict(opts.get("trial") or {})
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise SweepError(f"--set {item!r} is not KEY=VALUE (e.g. optim.lr=0.1)")
        trial[key.strip()] = yaml.safe_load(value)
    opts["trial"] = trial
    opts.setdefault("methods", ["supervised", "moco_v2"])
    opts.setdefault("seeds", [0])
    opts.setdefault("dataset", "digits")
    return opts


def searched_keys(opts: dict) -> list[str]:
    """Config keys a search varies: its ``space`` and the keys of its ``candidates``."""
    keys = list(opts.get("space") or {})
    for candidate in opts.get("candidates") or []:
        keys += [k for k in candidate if k not in keys]
    return keys
