"""Hyperparameter search for one method and corruption: Optuna (TPE) proposes, ASHA stops early.

    python sweeps/tune_hparams.py --methods moco_v2 --set data.corruption=glo_4
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


EVERY_EPOCH = ("loss", "lr", "samples_per_s", "epoch_time_s")  # the rest comes with evaluations


def search_cells(opts: dict, cells: list[dict]) -> list[dict]:
    """One cell per seed and ``candidates`` entry (the seed's cell with its overrides); else the one base cell.

    ``cells`` holds one cell per seed (one method, one corruption). A searched space tunes on one seed:
    Optuna proposes for the base cell only, so further seeds are an error rather than silently dropped.
    """
    candidates = opts.get("candidates")
    metric = opts.get("metric", "knn_acc")
    if not candidates:
        if len(cells) != 1:
            raise SweepError(f"seeds {' '.join(str(c['system.seed']) for c in cells)} are invalid for a searched space: it tunes "
                             "on one seed; valid: one seed, or candidates (which run every seed)")
        if metric not in EVERY_EPOCH and cells[0]["eval.eval_every"] != 1:
            raise SweepError(f"eval.eval_every {cells[0]['eval.eval_every']} is invalid for a searched space: ASHA needs "
                             f"{metric!r} every epoch; valid: eval.eval_every: 1, or metric one of {', '.join(EVERY_EPOCH)}")
        return cells
    if opts.get("space"):
        raise SweepError("candidates and space are exclusive; valid: a searched space (Optuna + ASHA) or a list of candidates")
    if not isinstance(candidates, list) or not all(isinstance(c, dict) and c for c in candidates):
        raise SweepError(f"candidates: {candidates!r} is invalid; valid: a list of flat overrides, e.g. [{{model.width: 0.5}}]")
    return [{**cell, **c} for cell in cells for c in candidates]  # seed-major: a seed's candidates run side by side


def tune_setup(opts: dict, cells: list[dict]) -> tuple[dict, dict]:
    """Optuna TPE (study persisted in sqlite) + ASHA on the trial's metric; cells[0] is the base.

    With ``candidates`` every cell runs once to the end (a grid, no searcher, no early stopping).
    """
    from ray import tune

    if opts.get("candidates"):  # no metric for Tune: it would demand it in every epoch's report
        return {"sweep.cell": tune.grid_search(cells)}, {}
    metric = {"metric": opts.get("metric", "knn_acc"), "mode": opts.get("mode", "max")}
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
    return param_space, {"search_alg": searcher, "scheduler": scheduler, **metric, "num_samples": int(opts.get("num_samples", 8))}


SWEEP = Sweep("tune_hparams", __doc__, corruptions,
              frozenset({"space", "candidates", "asha", "metric", "mode", "num_samples", "search_seed"}), tune_setup,
              edit_cells=search_cells)

if __name__ == "__main__":
    sys.exit(main(SWEEP))
