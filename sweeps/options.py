"""The common sweep CLI and the YAML search spaces it overrides.

Every sweep script takes the same flags; ``sweeps/configs/<sweep>.yaml`` holds its search space
and budget. Precedence: CLI flag > ``--smoke-test`` block of the YAML > the YAML > code defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from sweeps import choices
from trainables.schema import DEFAULT_STORAGE, MLFLOW_DB

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_MAX_FAILURES = 2  # Tune retries of a failed trial (from its last checkpoint)

# YAML keys every sweep understands (a sweep may add its own, e.g. grids, gammas).
COMMON_KEYS = {
    "dataset",
    "data_dir",
    "methods",
    "seeds",
    "epochs",
    "trial",
    "dataset_trial",
    "method_params",
    "resources",
    "max_concurrent",
    "smoke_test",
    "experiment",
    "max_failures",
    "report",
    "reuse_workers",
}


def coerce(key: str, value: Any, kind: type) -> Any:
    """``trainables.config.coerce``, imported when a value is read: that module imports torch, which
    ``--help`` must not wait for."""
    from trainables.config import coerce as config_coerce

    return config_coerce(key, value, kind)


@dataclasses.dataclass(frozen=True)
class Flag:
    """A sweep's own command-line flag: it sets the option ``key`` (the YAML key of the same name)."""

    key: str
    kind: type
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    # A flag that picks the YAML instead of setting a key: the file name with {} for its value
    # (paper_table1's --budget: "paper_table1_{}.yaml"), used unless --config is given.
    config: str | None = None
    default: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


class SweepError(ValueError):
    """A bad sweep input: the message is one line naming the value and the valid choices."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, like every other error of the sweeps (not usage + error)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def number(kind: type):
    """An argparse type: the flag's text as ``kind`` read like YAML and ``--set`` (``1e3`` is 1000),
    else the text itself, which ``check_options`` refuses naming the flag and what is valid."""

    def read(text: str):
        try:
            return coerce("", text, kind)
        except ValueError:
            return text

    read.__name__ = kind.__name__  # argparse names the type in its messages
    return read


def build_parser(description: str, sweep_name: str, flags: tuple[Flag, ...] = ()) -> argparse.ArgumentParser:
    """The common flags, then the sweep's own ``flags``; ``--help`` ends with the valid choices (plain text)."""
    p = Parser(
        description=description.replace("``", ""),
        epilog=choices.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto' (the one `ray start` began on this node) or "
        "the head's host:port (e.g. 10.0.0.5:6379); omit for a local instance. Run the sweep on a cluster node: "
        "Ray Client (ray://) addresses are not supported",
    )
    picker = next((f for f in flags if f.config), None)
    default_config = CONFIG_DIR / (picker.config.format(f"<{picker.key}>") if picker else f"{sweep_name}.yaml")
    add("--config", type=Path, default=None, help=f"YAML search space (default: {default_config})")
    add(
        "--dataset",
        help=f"{' | '.join(n if n != 'imagefolder' else 'imagefolder:<path>' for n in choices.DATASETS)} (see below)",
    )
    add("--data-dir", help="folder for torchvision datasets")
    add("--methods", nargs="+", help=f"methods to sweep: {', '.join(choices.METHODS)}")
    add("--epochs", type=number(int), help="training epochs per trial")
    add("--seeds", type=number(int), nargs="+", help="seeds, e.g. 0 1 2")
    add(
        "--gpus-per-trial",
        type=number(float),
        help="GPU share per trial (0.25 packs 4 trials per GPU); a whole number N > 1 trains each trial "
        "data-parallel on N GPUs (Ray Train, one worker per GPU)",
    )
    add("--cpus-per-trial", type=number(float), help="CPU cores per trial (shared by its workers)")
    add(
        "--workers-per-trial",
        type=number(int),
        help="processes per trial (data-parallel through Ray Train; default: the GPUs per trial if > 1, else 1)",
    )
    add("--max-concurrent", type=number(int), help="cap on trials running at once")
    add(
        "--storage-path",
        type=Path,
        help=f"where Tune keeps trials and checkpoints (default: ./{DEFAULT_STORAGE}; on a cluster: a shared folder, e.g. NFS, at the same path on every node)",
    )
    add("--mlflow-uri", help=f"tracking store (default: sqlite:///<storage-path>/{MLFLOW_DB})")
    add("--experiment", help=f"experiment name in Tune and MLflow (default: {sweep_name}-<dataset>)")
    add(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep: finished trials are kept, others resume from checkpoints",
    )
    add("--dry-run", action="store_true", help="print the trial table and resource plan, start nothing")
    add("--smoke-test", action="store_true", help="a tiny version of the sweep (the YAML's smoke_test block)")
    add(
        "--no-report",
        action="store_true",
        help="end without writing the HTML report (or `report: false` in the YAML); it prints the "
        "command that writes it later",
    )
    add(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a flat trial config override, e.g. optim.lr=0.1 (repeatable)",
    )
    for flag in flags:
        add(
            flag.flag,
            dest=flag.key,
            type=number(flag.kind) if flag.kind is not str else str,
            metavar=flag.metavar,
            choices=flag.choices,
            default=flag.default,
            help=flag.help,
        )
    return p


def config_path(args: argparse.Namespace, sweep_name: str, flags: tuple[Flag, ...] = ()) -> Path:
    """The YAML a sweep reads: ``--config``, else the one its picking flag names, else ``<sweep>.yaml``."""
    if args.config is not None:
        return args.config
    picker = next((f for f in flags if f.config), None)
    return CONFIG_DIR / (picker.config.format(getattr(args, picker.key)) if picker else f"{sweep_name}.yaml")


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


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """A sweep's options, built and validated once (``merge_options``), read-only after.

    The common options are fields; a sweep's own keys (``Sweep.extra_keys``: grids, gammas, space,
    ...) are in ``extra``, as its YAML or flags gave them and as its ``check_options`` normalised
    them. ``opts.get(key)`` and ``opts[key]`` read either, so a sweep reads ``opts.get("grids")``.
    """

    dataset: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    resources: dict[str, float]  # {"cpu": per trial, "gpu": per trial}
    trial: dict[str, Any]  # flat trial keys shared by every trial: the YAML's, then --set
    trial_set: dict[str, Any]  # the --set keys alone: they win over method_params too
    method_params: dict[str, dict[str, Any]]  # method -> its parameters or dotted flat keys
    max_failures: int
    data_dir: str | None = None
    epochs: int | None = None
    max_concurrent: int | None = None
    experiment: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in _OPTION_FIELDS:
            return getattr(self, key)
        return self.extra[key]

    def __contains__(self, key: str) -> bool:
        return key in _OPTION_FIELDS or key in self.extra

    def get(self, key: str, default: Any = None) -> Any:
        """The option (a field or a sweep key), ``default`` where it is unset or None."""
        value = getattr(self, key) if key in _OPTION_FIELDS else self.extra.get(key)
        return default if value is None else value

    def with_extra(self, values: dict[str, Any]) -> SweepOptions:
        """A copy whose sweep keys are updated (a sweep's ``check_options`` result)."""
        return dataclasses.replace(self, extra={**self.extra, **values})


_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(SweepOptions)) - {"extra"}


def merge_options(
    args: argparse.Namespace, data: dict[str, Any], extra_keys: set[str], flags: tuple[Flag, ...] = ()
) -> SweepOptions:
    """YAML + smoke-test block + CLI flags -> the sweep's options, checked; unknown YAML keys raise."""
    unknown = sorted(set(data) - COMMON_KEYS - extra_keys)
    if unknown:
        raise SweepError(
            f"config {str(args.config)!r}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(COMMON_KEYS | extra_keys))}"
        )
    opts = {k: v for k, v in data.items() if k not in ("smoke_test", "dataset_trial")}
    opts["trial"] = _mapping("trial", opts.get("trial"), "{optim.lr: 0.1}")
    smoke_trial: dict[str, Any] = {}
    if args.smoke_test:
        smoke = _mapping("smoke_test", data.get("smoke_test"), "{epochs: 1, seeds: [0]}")
        opts.update({k: v for k, v in smoke.items() if k != "trial"})
        smoke_trial = _mapping("smoke_test.trial", smoke.get("trial"), "{optim.batch_size: 32}")
    resources = dict(_mapping("resources", opts.get("resources"), "{cpu: 1, gpu: 0.25}"))
    flags = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "methods": args.methods,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "max_concurrent": args.max_concurrent,
        "experiment": args.experiment,
        "report": False if args.no_report else None,
        **{f.key: getattr(args, f.key) for f in flags if f.config is None},
    }
    opts.update({k: v for k, v in flags.items() if v is not None})
    if args.gpus_per_trial is not None:
        resources["gpu"] = args.gpus_per_trial
    if args.cpus_per_trial is not None:
        resources["cpu"] = args.cpus_per_trial
    if args.workers_per_trial is not None:
        resources["workers"] = args.workers_per_trial
    opts["resources"] = check_resources({"cpu": 1, "gpu": 0, **resources}, args)
    from trainables.config import parse_assignment  # torch: only once the flags are read, never for --help

    given: dict[str, Any] = {}  # --set KEY=VALUE: over the YAML's trial keys and its method_params alike
    for item in args.set:
        try:
            key, value = parse_assignment(item)
        except ValueError as err:
            raise SweepError(str(err)) from None
        given[key] = value
    opts.setdefault("dataset", "digits")
    # The YAML's keys for one dataset only (by its registry name: shapes, cifar10, imagefolder, ...),
    # e.g. the size the embedded shapes are drawn at, which must not resize a user's --dataset.
    per_dataset = _mapping("dataset_trial", data.get("dataset_trial"), "{shapes: {data.image_size: 16}}")
    from trainables.data.datasets import DATASETS

    unknown = sorted(set(per_dataset) - set(DATASETS))
    if unknown:
        raise SweepError(f"dataset_trial key {unknown[0]!r} is invalid; valid: {', '.join(sorted(DATASETS))}")
    name = str(opts["dataset"]).partition(":")[0]
    dataset_trial = _mapping(f"dataset_trial.{name}", per_dataset.get(name), "{data.image_size: 16}")
    opts["trial"] = {**opts["trial"], **dataset_trial, **smoke_trial, **given}
    opts["trial_set"] = given
    opts.setdefault("methods", ["supervised", "moco_v2"])
    opts.setdefault("seeds", [0])
    opts.setdefault("max_failures", DEFAULT_MAX_FAILURES)
    check_common(opts, args)
    common = {k: v for k, v in opts.items() if k in _OPTION_FIELDS}
    common.update(
        methods=tuple(opts["methods"]),
        seeds=tuple(opts["seeds"]),
        method_params={m: dict(p or {}) for m, p in (opts.get("method_params") or {}).items()},
    )
    return SweepOptions(**common, extra={k: v for k, v in opts.items() if k not in _OPTION_FIELDS})


# The flag that sets an option: an error names it when the flag was given, else the YAML key.
FLAGS = {
    "methods": "--methods",
    "seeds": "--seeds",
    "epochs": "--epochs",
    "max_concurrent": "--max-concurrent",
    "dataset": "--dataset",
    "data_dir": "--data-dir",
    "experiment": "--experiment",
    "resources.cpu": "--cpus-per-trial",
    "resources.gpu": "--gpus-per-trial",
    "resources.workers": "--workers-per-trial",
}
# Option -> (type, lower bound or None, what is valid). Sweep-specific keys are checked by their sweep.
SCALARS = {
    "epochs": (int, 0, "an integer >= 0"),
    "max_concurrent": (int, 1, "an integer >= 1 (omit it for no cap)"),
    "max_failures": (int, -1, "an integer >= 0 (retries per trial), or -1 for unlimited"),
    "dataset": (str, None, "a string"),
    "data_dir": (str, None, "a string"),
    "experiment": (str, None, "a string"),
    "include_untrained": (bool, None, "true or false"),
    "report": (bool, None, "true or false (or the --no-report flag)"),
    "reuse_workers": (bool, None, "true or false"),
}
LISTS = {
    "methods": (str, None, "a list of method names, e.g. [supervised, moco_v2]"),
    "seeds": (int, 0, "a list of integers >= 0, e.g. [0, 1, 2]"),
    "grids": (int, 1, "a list of integers >= 1 (patches per side), e.g. [2, 4, 8]"),
    "families": (str, None, "a list of patch families, e.g. [glo, loc]"),
    "gammas": (float, None, "a list of numbers, e.g. [0.5, 2]"),
    "corruptions": (str, None, "a list of corruption specs, e.g. [ori, glo_4, loc_8]"),
}


def _name(key: str, args: argparse.Namespace | None) -> str:
    flag = FLAGS.get(key)
    given = flag is not None and args is not None and getattr(args, flag[2:].replace("-", "_"), None) is not None
    return flag if given else key


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _checked(key: str, value: Any, kind: type, minimum: float | None, valid: str, args) -> Any:
    """``value`` as ``kind`` and >= ``minimum``, else a SweepError naming the flag or key."""
    try:
        converted = coerce(key, value, kind)
    except ValueError:
        converted = None
    if converted is None or (minimum is not None and converted < minimum):
        raise SweepError(f"{_name(key, args)} {_show(value)} is invalid; valid: {valid}")
    return converted


def _mapping(key: str, value: Any, example: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{key} {_show(value)} is invalid; valid: a mapping, e.g. {example}")
    return value


def check_common(opts: dict[str, Any], args: argparse.Namespace | None = None) -> None:
    """Type- and range-check, in place, the options every sweep shares (``"5e-4"`` becomes a number).

    Raises:
        SweepError: one line naming the flag (or YAML key), the value and what is valid.
    """
    for key, (kind, minimum, valid) in SCALARS.items():
        if opts.get(key) is not None:
            opts[key] = _checked(key, opts[key], kind, minimum, valid, args)
    for key, (kind, minimum, valid) in LISTS.items():
        if key in opts and (opts[key] is not None or key in ("methods", "seeds")):  # null grids: the defaults
            if not isinstance(opts[key], list) or not opts[key]:
                raise SweepError(f"{_name(key, args)} {_show(opts[key])} is invalid; valid: {valid}")
            opts[key] = [_checked(key, v, kind, minimum, valid, args) for v in opts[key]]
    for method, params in _mapping("method_params", opts.get("method_params"), "{moco_v2: {temperature: 0.1}}").items():
        _mapping(f"method_params.{method}", params, "{temperature: 0.1, optim.lr: 0.3}")
    experiment = opts.get("experiment")
    if experiment is not None and (experiment in ("", ".", "..") or any(c in experiment for c in "/\\\0")):
        raise SweepError(
            f"{_name('experiment', args)} {experiment!r} is invalid; valid: a folder name "
            "(no '/', not '.' or '..'), e.g. patch-grid-cifar10"
        )


def check_resources(resources: dict[str, Any], args: argparse.Namespace | None = None) -> dict[str, float]:
    """``{cpu, gpu, workers}`` per trial as numbers Ray accepts: cpu > 0; gpu >= 0, a fraction of one
    GPU or whole GPUs; workers (processes of a data-parallel trial) >= 1, one whole GPU each when the
    trial has GPUs, by default the GPUs of a trial with more than one."""
    unknown = sorted(map(str, set(resources) - {"cpu", "gpu", "workers"}))
    if unknown:
        raise SweepError(f"resources: unknown key(s) {', '.join(unknown)}; valid: cpu, gpu, workers")
    cpu_valid = "a number > 0 (CPU cores per trial)"
    cpu = _checked("resources.cpu", resources["cpu"], float, None, cpu_valid, args)
    gpu = _checked("resources.gpu", resources["gpu"], float, 0, "a number >= 0 (0.25 packs 4 trials per GPU)", args)
    if cpu <= 0:  # 0 would let Tune start every trial at once
        raise SweepError(f"{_name('resources.cpu', args)} {_show(resources['cpu'])} is invalid; valid: {cpu_valid}")
    if gpu > 1 and not gpu.is_integer():  # Ray's rule
        raise SweepError(
            f"{_name('resources.gpu', args)} {_show(resources['gpu'])} is invalid; "
            "valid: a fraction of one GPU (<= 1) or a whole number of GPUs"
        )
    return {"cpu": cpu, "gpu": gpu, "workers": _workers(resources.get("workers"), gpu, args)}


def _workers(given: Any, gpu: float, args: argparse.Namespace | None) -> int:
    """Processes per trial: ``given`` (checked), else the trial's GPUs when more than one, else 1."""
    if given is None:
        return int(gpu) if gpu > 1 else 1
    workers = _checked("resources.workers", given, int, 1, "an integer >= 1 (processes per trial)", args)
    if workers > 1 and gpu > 0 and gpu != workers:
        raise SweepError(
            f"{_name('resources.workers', args)} {workers} with {_name('resources.gpu', args)} {_show(gpu)} is "
            f"invalid: a data-parallel trial takes one whole GPU per worker; valid: {_name('resources.gpu', args)} "
            f"{workers}, or {_name('resources.gpu', args)} 0 (CPU workers)"
        )
    return workers


def searched_keys(opts: SweepOptions | dict) -> list[str]:
    """Config keys a search varies: its ``space`` and the keys of its ``candidates``."""
    keys = list(opts.get("space") or {})
    for candidate in opts.get("candidates") or []:
        keys += [k for k in candidate if k not in keys]
    return keys
