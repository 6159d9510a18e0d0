"""What a sweep records about itself when it starts, and the checks ``--resume`` runs on it: the
trials' flat configs (``sweep_plan.json``), the options Tune keeps in its own state
(``sweep_options.json``) and the dataset's digest (``sweep_dataset.json``). A resumed sweep that
would silently train something else (a changed config or default, other data) is refused, naming
what changed and how to restore it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sweeps import records
from sweeps.options import SweepError

if TYPE_CHECKING:
    from sweeps.launch import Plan


PLAN_FILE = "sweep_plan.json"
DATASET_FILE = "sweep_dataset.json"  # the dataset's digest and sizes when the sweep started


def save_plan(plan: Plan) -> None:
    """Record the trials' flat configs next to the Tune experiment (read back by ``check_resume``)."""
    plan.experiment_path.mkdir(parents=True, exist_ok=True)
    (plan.experiment_path / PLAN_FILE).write_text(json.dumps(plan.cells, indent=1, sort_keys=True))
    records.save_record(plan.experiment_path, plan.mlflow_uri)
    (plan.experiment_path / OPTIONS_FILE).write_text(json.dumps(_recorded_options(plan)))
    if plan.dataset_record is not None:
        (plan.experiment_path / DATASET_FILE).write_text(json.dumps(plan.dataset_record))


def check_resume(plan: Plan) -> None:
    """--resume continues the recorded trials; a changed config would be silently ignored by Tune,
    so it is refused, naming the first trial and key that differ. So are a folder someone else could
    have written (Tune's state is unpickled), another MLflow store, and a driver still running."""
    records.check_trusted(plan.storage, plan.experiment_path)
    records.check_store(plan.experiment_path, plan.mlflow_uri)
    records.check_driver_gone(plan.experiment_path)
    path = plan.experiment_path / PLAN_FILE
    if not path.exists():  # experiments from before the plan was recorded
        return
    recorded = json.loads(path.read_text())
    current = json.loads(json.dumps(plan.cells))  # tuples -> lists, as recorded
    where = f"the experiment's own config (its trials: {path}), or --experiment NEW_NAME"
    if len(recorded) != len(current):
        raise SweepError(
            f"--resume: this config makes {len(current)} trials, the experiment recorded {len(recorded)}"
            f"{_set_hint(recorded, current)}; valid: {where}"
        )
    for old, new in zip(recorded, current, strict=True):
        added = _added_at_default(old, new)  # keys newer than the recording, at the value the trial ran with
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in added)
        if changed:
            k = changed[0]
            raise SweepError(
                f"--resume: {k} of trial {old.get('method')} {old.get('data.corruption')} seed {old.get('system.seed')} "
                f"is {new.get(k)!r} now, {old.get(k)!r} when recorded{_set_hint(recorded, current)}; valid: {where}"
            )


def check_resume_dataset(plan: Plan) -> None:
    """--resume trains on the data the sweep started with: a folder whose files changed since (images
    added, re-encoded, or read otherwise by a newer decoder) would mix two datasets in one study."""
    path = plan.experiment_path / DATASET_FILE
    if plan.data is None or not path.exists():  # sweeps from before the record
        return
    was, now = json.loads(path.read_text()), plan.dataset_record
    if was["digest"] != now["digest"]:
        sizes = [", ".join(f"{k} {v}" for k, v in json.loads(r["profile"]).items()) for r in (was, now)]
        raise SweepError(
            f"--resume: dataset {now['name']!r} is not the one the sweep started on (contents {was['digest']}: "
            f"{sizes[0]}; now {now['digest']}: {sizes[1]}); valid: the sweep's own data, or --experiment NEW_NAME"
        )


def _set_hint(recorded: list[dict], current: list[dict]) -> str:
    """A hint naming the first trial key that every recorded trial had at one value and the current
    config sets otherwise (a default that changed since, e.g. data.image_size), and the --set that
    restores it; "" if there is none, or if the methods or seeds changed (then no --set restores it).
    Both sides must hold one value each: a key set per method (method_params) gets no hint."""
    arms = ("method", "system.seed")
    if {tuple(c.get(k) for k in arms) for c in recorded} != {tuple(c.get(k) for k in arms) for c in current}:
        return ""
    for key in sorted({k for cell in recorded for k in cell} - {"method", "data.corruption", "system.seed"}):
        was = {json.dumps(cell.get(key)) for cell in recorded}
        now = {json.dumps(cell.get(key)) for cell in current}
        if len(was) == 1 and len(now) == 1 and was != now:
            value = json.loads(was.pop())
            text = value if isinstance(value, str) else json.dumps(value)  # as --set reads it (YAML)
            return f" (it ran with {key} {text}: add --set {key}={text})"
    return ""


OPTIONS_FILE = "sweep_options.json"
# Kept by Tune's own state on --resume (tuner.pkl: RunConfig, TuneConfig, the searcher), not re-read from the YAML.
RESUME_OPTIONS = tuple(
    "max_failures max_concurrent reuse_workers num_samples space asha metric mode search_seed".split()
)


def _recorded_options(plan: Plan) -> dict[str, Any]:
    return json.loads(json.dumps({k: plan.opts.get(k) for k in RESUME_OPTIONS}))  # as the file holds them


def check_resume_options(plan: Plan) -> None:
    """Options that Tune restores from its own state: a change on --resume would be ignored, so it is refused."""
    path = plan.experiment_path / OPTIONS_FILE
    if not path.exists():  # experiments from before the options were recorded
        return
    recorded, current = json.loads(path.read_text()), _recorded_options(plan)
    for key in RESUME_OPTIONS:
        if key in recorded and recorded[key] != current[key]:
            raise SweepError(
                f"--resume: {key} is {current[key]!r} now, {recorded[key]!r} when the sweep started, and Tune "
                f"would keep {recorded[key]!r}; valid: {key}: {recorded[key]!r}, or --experiment NEW_NAME"
            )


# Keys that only shape training: two 0-epoch cells that differ only in these evaluate the same network.
def _added_at_default(recorded: dict, current: dict) -> set[str]:
    """Keys of ``current`` that ``recorded`` lacks and that hold their default: config keys added to
    the code after the plan was written (e.g. ``system.compile_mode``). A recorded trial resumed
    without them runs with those defaults (``TrialConfig.from_flat``), so they change nothing."""
    missing = set(current) - set(recorded)
    if not missing:
        return set()
    from trainables.config import TrialConfig

    defaults = json.loads(json.dumps(TrialConfig.from_flat({"method": current["method"]}).resolved().to_flat()))
    return {k for k in missing if k in defaults and current[k] == defaults[k]}
