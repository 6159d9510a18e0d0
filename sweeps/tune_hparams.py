"""Hyperparameter search for one method and corruption: Optuna (TPE) proposes, ASHA stops early.

    python sweeps/tune_hparams.py --methods moco_v2 --corruption glo_4 --num-samples 24 --metric knn_acc
    python sweeps/tune_hparams.py --resume ...      # an interrupted search continues

``candidates`` (a list of flat overrides) instead of ``space`` compares a few hand-named settings
side by side, each run to the end with no early stopping: the way to compare settings whose cost
per epoch differs (subset size, width) at a matched budget, which ASHA's per-epoch rungs cannot.

The Optuna study is persisted next to the Tune experiment (``<storage>/<experiment>/optuna.db``),
so an interrupted search resumes with everything it learned. Space, budget and ASHA settings:
sweeps/configs/tune_hparams.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sweeps.launch import Sweep, main
from sweeps.options import Flag, SweepError, SweepOptions
from trainables import metrics
from trainables.metrics import KNN_ACC

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
ASHA = {"grace_period": 1, "reduction_factor": 2}  # key -> minimum


def corruptions(opts: SweepOptions, size: tuple[int, int]) -> list[str]:
    """One corruption: the one being tuned for (``--corruption``, else the YAML's ``corruption``, else
    its ``trial: data.corruption``, else ``ori``)."""
    if len(opts["methods"]) != 1:
        raise SweepError(f"tune_hparams tunes one method at a time, got --methods {' '.join(opts['methods'])}")
    if opts.get("corruption") is not None:
        return [str(opts["corruption"])]
    return [str((opts.get("trial") or {}).get("data.corruption", "ori"))]


def domain(key: str, spec: dict):
    """YAML ``{loguniform: [lo, hi]}`` (checked by ``check_search``) -> a Tune search domain."""
    from ray import tune

    kind, args = next(iter(spec.items()))
    return (
        {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}[kind](*args)
        if kind != "choice"
        else tune.choice(args)
    )


def check_search(opts: SweepOptions, cells: list[dict]) -> dict:
    """The search's own YAML keys typed and in range before Ray starts (``1e3`` samples included),
    returned normalised; ``space`` comes back Tune-ready: numbers read, and bounds or choices checked
    against the base trial's config (``cells[0]``), so no sampled trial can fail on its config.

    Raises:
        SweepError: one line naming the key, the value and what is valid.
    """
    cell, checked = cells[0], {}
    for key, minimum in (("num_samples", 1), ("search_seed", 0)):
        if opts.get(key) is not None:
            checked[key] = _integer(key, opts[key], minimum)
    asha = opts.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - set(ASHA):
        raise SweepError(
            f"asha {asha!r} is invalid; valid: a mapping of grace_period (>= 1) and reduction_factor (>= 2)"
        )
    checked["asha"] = {k: _integer(f"asha.{k}", v, ASHA[k]) for k, v in asha.items()}
    if opts.get("mode", "max") not in ("min", "max"):
        raise SweepError(f"mode {opts['mode']!r} is invalid; valid: min, max")
    if not isinstance(opts.get("metric", KNN_ACC), str):
        raise SweepError(f"metric {opts['metric']!r} is invalid; valid: a reported metric's name, e.g. knn_acc")
    space = opts.get("space") or {}
    if not isinstance(space, dict):
        raise SweepError(
            f"space {space!r} is invalid; valid: a mapping of config key to distribution, e.g. {{optim.lr: {{loguniform: [0.01, 1.0]}}}}"
        )
    unknown = sorted(str(k) for k in space if k not in cell)
    if unknown:
        raise SweepError(
            f"space key(s) {', '.join(unknown)} are not config keys of {cell['method']}; valid: {', '.join(k for k in cell if '.' in k)}"
        )
    checked["space"] = {key: _distribution(key, spec, cell) for key, spec in space.items()}
    return checked


def _integer(key: str, value, minimum: int) -> int:
    from trainables.config import coerce

    try:
        number = coerce(key, value, int)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise SweepError(f"{key} {value!r} is invalid; valid: an integer >= {minimum}")
    return number


def _distribution(key: str, spec, cell: dict) -> dict:
    """One ``space`` entry with its arguments checked against the config (``cell`` is the base trial)."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise SweepError(
            f"space.{key}: {spec!r} is invalid; valid: one of {', '.join(DISTRIBUTIONS)} with its arguments, e.g. {{loguniform: [0.01, 1.0]}}"
        )
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(
                f"space.{key}: choice {args!r} is invalid; valid: a non-empty list, e.g. {{choice: [64, 128]}}"
            )
        return {kind: [_trial_value(key, v, cell) for v in args]}
    from trainables.config import coerce

    try:
        low, high = (coerce(key, v, int if kind == "randint" else float) for v in args)
    except (ValueError, TypeError):  # not a list of two numbers
        low = high = None
    if low is None or not low < high or (kind == "loguniform" and low <= 0):
        raise SweepError(
            f"space.{key}: {kind} {args!r} is invalid; valid: [low, high], two {'integers' if kind == 'randint' else 'numbers'} "
            f"with low < high{' and low > 0' if kind == 'loguniform' else ''}"
        )
    if kind != "randint" and _integer_key(key, cell["method"]):
        raise SweepError(f"space.{key}: {kind} draws fractions but {key} is an integer; valid: randint or choice")
    for value in (low, high - 1 if kind == "randint" else high):  # randint's high is exclusive
        _trial_value(key, value, cell)
    return {kind: [low, high]}


def _trial_value(key: str, value, cell: dict):
    """``value`` as the trial's config holds it; SweepError when the config refuses it."""
    from trainables.config import TrialConfig

    try:
        return TrialConfig.from_flat({**cell, key: value}).resolved().to_flat()[key]
    except ValueError as err:
        raise SweepError(f"space.{key}: {str(err).splitlines()[0]}") from None


def _integer_key(key: str, method: str) -> bool:
    from trainables.config import SECTIONS, field_types
    from trainables.methods import method_class

    section, _, name = key.partition(".")
    cls = method_class(method).Params if section == "method" else SECTIONS.get(section)
    kind = field_types(cls).get(name) if cls is not None else None
    return kind is int or int in getattr(kind, "__args__", ())


# Reported in every epoch by every method (trainables.metrics); the rest comes with evaluations.
EVERY_EPOCH = metrics.names("metric", metrics.EPOCH, every_method=True)


def search_cells(opts: SweepOptions, cells: list[dict]) -> list[dict]:
    """One cell per seed and ``candidates`` entry (the seed's cell with its overrides); else the one base cell.

    ``cells`` holds one cell per seed (one method, one corruption). A searched space tunes on one seed:
    Optuna proposes for the base cell only, so further seeds are an error rather than silently dropped.
    """
    candidates = opts.get("candidates")
    metric = opts.get("metric", KNN_ACC)
    if not candidates:
        if len(cells) != 1:
            raise SweepError(
                f"seeds {' '.join(str(c['system.seed']) for c in cells)} are invalid for a searched space: it tunes "
                "on one seed; valid: one seed, or candidates (which run every seed)"
            )
        if metric not in EVERY_EPOCH and cells[0]["eval.eval_every"] != 1:
            raise SweepError(
                f"eval.eval_every {cells[0]['eval.eval_every']} is invalid for a searched space: ASHA needs "
                f"{metric!r} every epoch; valid: eval.eval_every: 1, or metric one of {', '.join(EVERY_EPOCH)}"
            )
        return cells
    if opts.get("space"):
        raise SweepError(
            "candidates and space are exclusive; valid: a searched space (Optuna + ASHA) or a list of candidates"
        )
    if not isinstance(candidates, list) or not all(isinstance(c, dict) and c for c in candidates):
        raise SweepError(
            f"candidates: {candidates!r} is invalid; valid: a list of flat overrides, e.g. [{{model.width: 0.5}}]"
        )
    return [{**cell, **c} for cell in cells for c in candidates]  # seed-major: a seed's candidates run side by side


def tune_setup(opts: SweepOptions, experiment_path: Path, cells: list[dict]) -> tuple[dict, dict]:
    """Optuna TPE (study persisted in sqlite) + ASHA on the trial's metric; cells[0] is the base.

    With ``candidates`` every cell runs once to the end (a grid, no searcher, no early stopping).
    """
    from ray import tune

    if opts.get("candidates"):  # no metric for Tune: it would demand it in every epoch's report
        return {"sweep.cell": tune.grid_search(cells)}, {}
    metric = {"metric": opts.get("metric", KNN_ACC), "mode": opts.get("mode", "max")}
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from sweeps import live_asha

    space = opts.get("space") or {}  # checked by check_search
    storage = experiment_path / "optuna.db"
    storage.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.storages.RDBStorage(f"sqlite:///{storage}")
    searcher = OptunaSearch(
        storage=study,
        study_name=experiment_path.name,
        sampler=optuna.samplers.TPESampler(seed=int(opts.get("search_seed", 0))),
    )
    asha = opts.get("asha") or {}
    scheduler = live_asha.LiveASHA(
        keep_rungs=True,
        time_attr="training_iteration",
        max_t=int(cells[0]["optim.epochs"]),
        grace_period=int(asha.get("grace_period", 1)),
        reduction_factor=int(asha.get("reduction_factor", 2)),
    )
    param_space = {"sweep.cell": cells[0], **{k: domain(k, v) for k, v in space.items()}}
    return param_space, {
        "search_alg": searcher,
        "scheduler": scheduler,
        **metric,
        "num_samples": int(opts.get("num_samples", 8)),
    }


FLAGS = (
    Flag(
        "corruption",
        str,
        "the corruption to tune for, e.g. glo_4 (default: the YAML's trial data.corruption, else ori)",
        "SPEC",
    ),
    Flag("num_samples", int, "configurations Optuna proposes (default: the YAML's num_samples)", "N"),
    Flag(
        "metric",
        str,
        "the reported metric ASHA and Optuna compare, e.g. knn_acc or loss (default: the YAML's metric)",
        "NAME",
    ),
)
SWEEP = Sweep(
    "tune_hparams",
    __doc__,
    corruptions,
    frozenset({"space", "candidates", "asha", "metric", "mode", "num_samples", "search_seed", "corruption"}),
    tune_setup,
    check_options=check_search,
    edit_cells=search_cells,
    flags=FLAGS,
)


def cli(argv: list[str] | None = None) -> int:
    """``sbl-sweep tune_hparams`` and ``python sweeps/tune_hparams.py``: exit code of ``sweeps.launch.main``."""
    return main(SWEEP, argv)


if __name__ == "__main__":
    sys.exit(cli())
