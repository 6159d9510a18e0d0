"""The one shared sweep launcher: validate everything, then run the trials with Ray Tune.

A sweep script only declares its corruption axis (and, for searches, a Tune setup) and calls
``main(Sweep(...))``. Nothing starts until every input has been checked: methods,
corruptions against the image size, the dataset, the YAML, the MLflow store, the storage path,
and the cluster's GPUs/CPUs against the per-trial request.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeps import records
from sweeps.options import (
    DEFAULT_STORAGE,
    Flag,
    SweepError,
    SweepOptions,
    build_parser,
    config_path,
    load_yaml,
    merge_options,
    searched_keys,
)
from sweeps.preflight import check_address, check_storage
from sweeps.resume import PLAN_FILE, check_resume, check_resume_dataset, check_resume_options
from trainables.schema import default_uri

if TYPE_CHECKING:
    from trainables.data.datasets import ImageDataset

# torch, timm and the registries are imported inside the functions that validate and run, so that a
# sweep's --help (which imports this module) answers in well under a second.


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What a sweep script declares."""

    name: str
    description: str
    corruptions: Callable[[SweepOptions, tuple[int, int]], list[str]]
    extra_keys: frozenset[str] = frozenset()
    # (opts, experiment folder, cells) -> (param_space, TuneConfig kwargs); default: a grid over the cells.
    tune_setup: Callable[[SweepOptions, Path, list[dict]], tuple[dict, dict]] | None = None
    # (opts, base cells) -> the sweep's own keys checked and normalised (e.g. a search space against
    # the base trial's config), before any cell is edited; SweepError names a bad one.
    check_options: Callable[[SweepOptions, list[dict]], dict[str, Any]] | None = None
    # (opts, cells) -> more flat cells (e.g. the untrained reference), validated like the others.
    extra_cells: Callable[[SweepOptions, list[dict]], list[dict]] | None = None
    # (opts, cells) -> the cells rewritten (e.g. a checkpoint per method and seed), then re-validated.
    edit_cells: Callable[[SweepOptions, list[dict]], list[dict]] | None = None
    # The sweep's own flags (e.g. tune_hparams' --num-samples), each setting the YAML key of its name.
    flags: tuple[Flag, ...] = ()


# The study's Table 1 corruptions (docs/study.md): paper_table1's and downstream's default axis.
TABLE1 = ("ori", "glo_4", "glo_8", "loc_4", "loc_8")


def untrained_cells(opts: SweepOptions, cells: list[dict]) -> list[dict]:
    """With ``include_untrained``: an epochs-0 copy of the first cell of each corruption x seed.

    Every method builds its backbone first from the seed's ``init`` generator, so one
    untrained trial per corruption x seed is the starting point of all methods' trials.
    """
    if not opts.get("include_untrained"):
        return []
    first: dict[tuple, dict] = {}
    for cell in cells:
        first.setdefault((cell["data.corruption"], cell["system.seed"]), cell)
    return [{**cell, "optim.epochs": 0} for cell in first.values()]


@dataclasses.dataclass
class Plan:
    """A validated sweep: every trial's flat config and where things go."""

    sweep: Sweep
    opts: SweepOptions
    cells: list[dict[str, Any]]
    data: ImageDataset
    storage: Path
    experiment: str
    mlflow_uri: str
    address: str | None
    resume: bool
    sweep_keys: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # the YAML's sweep.* trial keys (fault injection)

    @property
    def experiment_path(self) -> Path:
        return self.storage / self.experiment

    @functools.cached_property
    def dataset_record(self) -> dict[str, str] | None:
        """``sweeps.tracking.dataset_record`` of the data (its digest hashes a sample of the pixels):
        once per launch, for the resume record and every trial's MLflow input alike."""
        if self.data is None:
            return None
        from sweeps.tracking import dataset_record  # Ray and MLflow: only once something runs

        return dataset_record(self.data)


def check_normalization(cells: list[dict[str, Any]], data: ImageDataset) -> None:
    """Refuse fixed normalisation statistics that do not fit the data (``data.normalization``
    imagenet on grey images, pretrained for a backbone timm has no weights for) before any trial.
    The dataset's own statistics always fit, and are not computed here."""
    from trainables.build import normalization
    from trainables.config import TrialConfig

    for cell in cells:
        if cell.get("data.normalization", "dataset") != "dataset":
            normalization(TrialConfig.from_flat(cell), data)


FIT_KEYS = (
    "optim.batch_size",
    "optim.epochs",
    "data.train_per_class",
    "data.labels_per_class",
)  # check_batch_fits reads


def _check_batches(cells: list[dict], data, dry_run: bool, space: dict | None = None) -> None:
    """Every trial's batch fits the split it trains on (``trainables.build.check_batch_fits``), also
    every trial a searched ``space`` can draw (each combination of the ends of its ``FIT_KEYS``): a
    launch is refused (ValueError); a dry run, which plans a preset on any folder, only warns."""
    from trainables.build import check_batch_fits
    from trainables.config import TrialConfig

    ends = {}
    for key, spec in (space or {}).items():  # Tune-ready: {choice: [...]} or {kind: [low, high]}
        if key not in FIT_KEYS:
            continue
        kind, args = next(iter(spec.items()))
        ends[key] = list(args) if kind == "choice" else [args[0], args[1] - 1 if kind == "randint" else args[1]]
    # Every drawable trial lies between these corners (a sampled value replaces the base cell's).
    corners = [dict(zip(ends, values, strict=True)) for values in itertools.product(*ends.values())] or [{}]
    variants = [
        ({**cell, **corner}, "".join(f"space.{k} {v}: " for k, v in corner.items()))
        for cell in cells
        for corner in corners
    ]
    for cell, where in variants:
        try:
            check_batch_fits(TrialConfig.from_flat(cell), data)
        except ValueError as err:
            if not dry_run:
                raise ValueError(f"{where}{err}") from None
            print(
                f"warning: {where}{err} ({cell['method']} {cell['data.corruption']}): a launch is refused",
                file=sys.stderr,
            )
            return


def prepare(sweep: Sweep, argv: Sequence[str] | None = None) -> tuple[Plan, bool]:
    """Parse and validate; returns (plan, dry_run). Raises SweepError with a one-line message."""
    args = build_parser(sweep.description, sweep.name, sweep.flags).parse_args(argv)
    args.config = config_path(args, sweep.name, sweep.flags)
    opts = merge_options(args, load_yaml(args.config), set(sweep.extra_keys), sweep.flags)
    check_storage(args.storage_path or DEFAULT_STORAGE)
    from corruptions import CorruptionError, parse
    from trainables.config import TrialConfig
    from trainables.data.datasets import DatasetError, absolute_spec, check_dataset, load_dataset
    from trainables.methods import method_class

    try:
        for m in opts["methods"]:
            method_class(m)
        check_dataset(opts["dataset"], opts.get("data_dir"))
        # Trials run in another cwd: every path they get is absolute.
        base = {
            "data.dataset": absolute_spec(opts["dataset"]),
            **{k: v for k, v in opts["trial"].items() if not k.startswith("sweep.")},
        }
        sweep_keys = {k: v for k, v in opts["trial"].items() if k.startswith("sweep.")}
        if opts.get("data_dir"):
            base["data.data_dir"] = str(Path(opts["data_dir"]).expanduser().resolve())
        probe = TrialConfig.from_flat({**base, "method": opts["methods"][0]})
        data = load_dataset(
            probe.data.dataset,
            image_size=probe.data.image_size,
            data_dir=probe.data.data_dir,
            cache_dir=probe.data.cache_dir,
            memory_budget_gb=probe.data.memory_budget_gb,
            streaming=probe.data.streaming,
            stream_workers=probe.data.stream_workers,
        )
        corruptions = sweep.corruptions(opts, data.image_size)
        for spec in corruptions:
            parse(spec).check(*data.image_size)
        cells = [_cell(base, opts, m, c, s) for m in opts["methods"] for c in corruptions for s in opts["seeds"]]
        if sweep.check_options is not None:
            opts = opts.with_extra(sweep.check_options(opts, cells))
        if sweep.edit_cells is not None:
            cells = [TrialConfig.from_flat(c).resolved().to_flat() for c in sweep.edit_cells(opts, cells)]
        if sweep.extra_cells is not None:
            cells += [TrialConfig.from_flat(c).resolved().to_flat() for c in sweep.extra_cells(opts, cells)]
        cells = _unique(graphs_off_for_ranks(cells, opts))
        check_data_parallel(cells, int(opts["resources"]["workers"]))
        check_normalization(cells, data)
        _check_batches(cells, data, args.dry_run, opts.get("space"))
    except (CorruptionError, DatasetError) as err:
        raise SweepError(str(err)) from None
    except ValueError as err:
        raise SweepError(str(err).splitlines()[0]) from None
    storage = (args.storage_path or DEFAULT_STORAGE).expanduser().resolve()
    experiment = opts.get("experiment") or f"{sweep.name}-{_slug(opts['dataset'])}"
    mlflow_uri = args.mlflow_uri or default_uri(storage)
    plan = Plan(sweep, opts, cells, data, storage, experiment, mlflow_uri, args.address, args.resume, sweep_keys)
    if plan.experiment_path.exists() and not args.resume and not args.dry_run:
        raise SweepError(
            f"experiment {str(plan.experiment_path)!r} already exists; pass --resume to continue it or --experiment NEW_NAME"
        )
    if args.resume and not plan.experiment_path.exists():
        raise SweepError(
            f"--resume: no experiment at {str(plan.experiment_path)!r}; valid: an existing --experiment under --storage-path"
        )
    if args.resume:
        check_resume(plan)  # the trials first: a changed key names the --set that restores it
        check_resume_dataset(plan)
        check_resume_options(plan)
    if not args.dry_run:
        check_address(args.address)
        from sweeps.tracking import check_tracking_uri

        try:
            check_tracking_uri(mlflow_uri)
        except ValueError as err:
            raise SweepError(str(err)) from None
    return plan, args.dry_run


TRAINING_ONLY = ("method", "method.", "optim.", "data.augmentation", "data.crop_min_scale", "data.labels_per_class")


def _unique(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial once: identical cells, and untrained cells (0 epochs from initialisation) that differ
    only in ``TRAINING_ONLY`` keys, e.g. every method's cell under ``--epochs 0`` (the backbone is
    built from the seed before the method's head, so it is the same network): the first is kept."""
    from analysis.frame import given_network

    unique: dict[str, dict[str, Any]] = {}
    for cell in cells:
        untrained = cell.get("optim.epochs") == 0 and not given_network(
            cell.get("model.init_checkpoint"), cell.get("model.pretrained")
        )
        same = {
            k: v for k, v in cell.items() if not (untrained and k.startswith(TRAINING_ONLY) and k != "optim.epochs")
        }
        unique.setdefault(json.dumps(same, sort_keys=True, default=str), cell)
    return list(unique.values())


def _cell(base: dict, opts: SweepOptions, method: str, corruption: str, seed: int) -> dict[str, Any]:
    """One trial's complete, resolved flat config (validated here, before any trial starts)."""
    from trainables.config import TrialConfig

    flat = {**base, "method": method, "data.corruption": corruption, "system.seed": seed}
    if opts.get("epochs") is not None:
        flat["optim.epochs"] = int(opts["epochs"])
    # Per-method overrides: a bare key is a method parameter, a dotted one a flat trial key (optim.lr).
    flat.update(
        {k if "." in k else f"method.{k}": v for k, v in ((opts.get("method_params") or {}).get(method) or {}).items()}
    )
    flat.update({k: v for k, v in (opts.get("trial_set") or {}).items() if not k.startswith("sweep.")})  # the CLI wins
    return TrialConfig.from_flat(absolute_paths(flat)).resolved().to_flat()


def absolute_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Make the path keys of a flat config absolute, in place (trials run in another cwd); returns it.

    Raises:
        SweepError: ``model.pretrained_file`` names no file.
    """
    if flat.get("data.cache_dir"):
        flat["data.cache_dir"] = str(Path(flat["data.cache_dir"]).expanduser().resolve())
    if flat.get("model.pretrained_file"):
        weights = Path(flat["model.pretrained_file"]).expanduser().resolve()
        if not weights.is_file():
            raise SweepError(f"model.pretrained_file {str(weights)!r} does not exist; valid: a saved state dict")
        flat["model.pretrained_file"] = str(weights)
    return flat


def graphs_off_for_ranks(cells: list[dict[str, Any]], opts: SweepOptions) -> list[dict[str, Any]]:
    """The cells with a preset's ``system.cuda_graph`` turned off when a trial has several workers
    (a captured step holds no gradient all-reduce), said in one NOTE line. A ``--set
    system.cuda_graph=true`` stays on, for ``check_data_parallel`` to refuse."""
    workers = int(opts["resources"]["workers"])
    graphs = sorted({c["method"] for c in cells if c.get("system.cuda_graph")})
    if workers == 1 or not graphs or "system.cuda_graph" in (opts.get("trial_set") or {}):
        return cells
    print(
        f"NOTE: system.cuda_graph turned off for {', '.join(graphs)}: {workers} workers per trial "
        "(a captured step holds no gradient all-reduce); their other speed levers stay",
        flush=True,
    )
    return [{**c, "system.cuda_graph": False} for c in cells]


def check_data_parallel(cells: list[dict[str, Any]], workers: int) -> None:
    """Every trial can train on ``workers`` ranks (method, batch split, no CUDA graph); ValueError names the first that cannot."""
    from trainables.config import TrialConfig
    from trainables.distributed import check_config

    for cell in cells if workers > 1 else []:
        check_config(TrialConfig.from_flat(cell), workers)


def _slug(dataset: str) -> str:
    name, _, arg = dataset.partition(":")
    return Path(arg).name if arg else name


SHOWN = ("method", "data.corruption", "system.seed", "optim.epochs", "optim.batch_size", "optim.lr")


def describe(plan: Plan) -> str:
    """The trial table and the resource plan (what --dry-run prints)."""
    r = plan.opts["resources"]
    from analysis.frame import config_arm  # the arm names the tables will use (untrained, supervised@20, ...)

    lines = [
        f"sweep {plan.sweep.name}: {len(plan.cells)} trials on {plan.data.name} "
        f"({len(plan.data.train)} train / {len(plan.data.test)} test, {plan.data.image_size[0]}x{plan.data.image_size[1]} px)",
        f"{'#':>3}  {'arm':<15} {'corruption':<14} {'seed':>4} {'epochs':>6} {'batch':>5} {'lr':>8}",
    ]
    extra = [k for k in searched_keys(plan.opts) if k not in SHOWN]  # what a candidate list varies
    lines[-1] += "".join(f"  {k}" for k in extra)
    space = plan.opts.get("space") or {}
    for i, cell in enumerate(plan.cells):
        c = {k: "searched" if k in space else v for k, v in cell.items()}  # a space overrides the cell
        lr = c["optim.lr"] if isinstance(c["optim.lr"], str) else f"{c['optim.lr']:.3g}"
        arm = config_arm(c)
        lines.append(
            f"{i:>3}  {arm:<15} {c['data.corruption']:<14} {c['system.seed']:>4} "
            f"{c['optim.epochs']:>6} {c['optim.batch_size']:>5} {lr:>8}"
            + "".join(f"  {c.get(k)!s:>{len(k)}}" for k in extra)
        )
    conc = plan.opts.get("max_concurrent")
    lines += [
        f"resources per trial: {r['cpu']:g} CPU, {r['gpu']:g} GPU"
        + (f" ({int(1 / r['gpu'])} trials per GPU)" if 0 < r["gpu"] < 1 else "")
        + (f", data-parallel over {r['workers']} workers (Ray Train)" if r.get("workers", 1) > 1 else "")
        + (f"; at most {conc} at once" if conc else ""),
        f"cluster: {plan.address or 'a new local Ray instance'}; storage: {plan.experiment_path}; MLflow: {plan.mlflow_uri}",
    ]
    return "\n".join(lines)


def main(sweep: Sweep, argv: Sequence[str] | None = None) -> int:
    """CLI entry point of every sweep script. Exit codes: 0 done, 1 trials failed, 2 bad input, 130 interrupted."""
    records.private_umask()
    try:
        plan, dry_run = prepare(sweep, argv)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl+C); no trial had started", file=sys.stderr)
        return 130
    print(describe(plan), flush=True)
    if dry_run:
        return 0
    from sweeps.execute import execute  # Ray is imported only when something runs

    try:
        return execute(plan)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside Tune's own SIGINT handling, e.g. while joining a cluster
        after = (
            "continue with the same command and --resume"
            if (plan.experiment_path / PLAN_FILE).exists()
            else "no trial had started"
        )
        print(f"error: interrupted (Ctrl+C); {after}", file=sys.stderr)
        return 130
