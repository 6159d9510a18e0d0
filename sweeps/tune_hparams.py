"""Hyperparameter search for one method and corruption: Optuna (TPE) proposes, ASHA stops early.

    python sweeps/tune_hparams.py --methods moco_v2 --set data.corruption=glo_4
    python sweeps/tune_hparams.py --resume ...      # an interrupted search continues

The Optuna study is persisted next to the Tune experiment (``<storage>/<experiment>/optuna.db``),
so an interrupted search resumes with everything it learned. Space, budget and ASHA settings:
sweeps/configs/tune_hparams.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

from sweeps.launch import Sweep, main  # noqa: E402
from sweeps.options import SweepError  # noqa: E402

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")


def corruptions(opts: dict, size: tuple[int, int]) -> list[str]:
    """One corruption: the one being tuned for."""
    if len(opts["methods"]) != 1:
        raise SweepError(f"tune_hparams tunes one method at a time, got --methods {' '.join(opts['methods'])}")
    return [str((opts.get("trial") or {}).get("data.corruption", "ori"))]


def domain(key: str, spec: dict):
    """YAML ``{loguniform: [lo, hi]}`` -> a Tune search domain."""
    from ray import tune

    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise SweepError(f"space.{key}: {spec!r} is invalid; valid: one of {', '.join(DISTRIBUTIONS)} with its arguments, e.g. {{loguniform: [0.01, 1.0]}}")
    kind, args = next(iter(spec.items()))
    return {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}[kind](*args) if kind != "choice" else tune.choice(args)


def tune_setup(opts: dict, cells: list[dict]) -> tuple[dict, dict]:
    """Optuna TPE (study persisted in sqlite) + ASHA on the trial's metric; cells[0] is the base."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = opts.get("space") or {}
    unknown = sorted(k for k in space if k not in cells[0])
    if unknown:
        raise SweepError(f"space key(s) {', '.join(unknown)} are not config keys of {cells[0]['method']}; valid: {', '.join(k for k in cells[0] if '.' in k)}")
    storage = Path(opts["_experiment_path"]) / "optuna.db"
    storage.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.storages.RDBStorage(f"sqlite:///{storage}")
    searcher = OptunaSearch(storage=study, study_name=opts["_experiment"],
                            sampler=optuna.samplers.TPESampler(seed=int(opts.get("search_seed", 0))))
    asha = opts.get("asha") or {}
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=int(cells[0]["optim.epochs"]),
                              grace_period=int(asha.get("grace_period", 1)), reduction_factor=int(asha.get("reduction_factor", 2)))
    param_space = {"sweep.cell": cells[0], **{k: domain(k, v) for k, v in space.items()}}
    return param_space, {"search_alg": searcher, "scheduler": scheduler, "metric": opts.get("metric", "knn_acc"),
                         "mode": opts.get("mode", "max"), "num_samples": int(opts.get("num_samples", 8))}


SWEEP = Sweep("tune_hparams", __doc__, corruptions,
              frozenset({"space", "asha", "metric", "mode", "num_samples", "search_seed"}), tune_setup)

if __name__ == "__main__":
    sys.exit(main(SWEEP))
