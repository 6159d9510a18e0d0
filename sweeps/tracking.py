"""MLflow tracking for sweeps: one writer, on the driver.

Trials never talk to MLflow; the driver's ``MLflowTrialWriter`` (a Tune callback) turns their
reports into one nested child run per trial under the sweep's parent run. Because there is a
single writer, concurrent trials can never lock or corrupt a sqlite store, and runs are looked
up by their ``ray_trial_id`` tag instead of kept in callback state, so FailureConfig retries and
``--resume`` continue the same run (Ray's ``MLflowLoggerCallback`` makes a new one). A run recorded
FINISHED with its final metrics is final: it is never reopened, and ``--resume`` hands its result
to the trainable instead of training the trial again (``recorded_finals``). One experiment name
holds one sweep: a new sweep under a name the store holds is refused (``check_new_sweep``), and the
parent run is tagged with the sweep's storage folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from corruptions import parse
from sweeps.store import ensure_store
from trainables import metrics, ray_train_adapter
from trainables.schema import (
    FINAL_METRICS,
    PARENT_TAG,
    STATE_FILE,
    STORAGE_TAG,
    TRIAL_TAG,
    trial_checkpoints,
    trial_config,
)
from trainables.tune_adapter import REPLAYED, crash_report

LIBRARIES = ("torch", "torchvision", "timm", "ray", "mlflow", "optuna", "numpy")


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (ValueError, one line) if the store cannot be reached or created."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except OSError as err:
            raise ValueError(
                f"MLflow URI {uri!r} is unreachable ({err}); start `mlflow server` or pass a sqlite:/// path"
            ) from None
    elif uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_absolute():
            raise ValueError(
                f"MLflow URI {uri!r} is relative (trials run in another cwd); valid: sqlite:////absolute/path.db or http://host:port"
            )
        if path.is_file() and (problem := _foreign_sqlite(path)):
            raise ValueError(f"MLflow URI {uri!r}: {problem}; valid: an MLflow store, or a path where none exists yet")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"MLflow URI {uri!r}: cannot create {path.parent} ({err})") from None
    else:
        raise ValueError(
            f"MLflow URI {uri!r} is not supported; valid: sqlite:////absolute/path.db, http://host:port, https://host"
        )


def _foreign_sqlite(path: Path) -> str | None:
    """Why an existing file cannot become the sweep's store (it is only read here): MLflow would fail
    on one that is no SQLite database and add its tables to another program's. An empty file or
    database is fine: MLflow sets it up as it would a new one."""
    with path.open("rb") as f:
        header = f.read(16)
    if not header:
        return None
    if header != b"SQLite format 3\x00":
        return "the file is not an SQLite database"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        return f"the database cannot be read ({err})"
    if tables and not {"experiments", "runs"} <= tables:
        return f"the database holds another program's tables ({', '.join(sorted(tables)[:3])}), not MLflow's"
    return None


def code_version() -> dict[str, str]:
    """Git SHA (+dirty flag) of this checkout, the versions of the main libraries, and MLflow's source
    tags (the command that launched the sweep and its commit: the UI's Source column)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    tags = {"git_sha": git("rev-parse", "HEAD") or "unknown", "git_dirty": str(bool(git("status", "--porcelain")))}
    tags.update(
        {
            "mlflow.source.type": "LOCAL",
            "mlflow.source.name": Path(sys.argv[0]).name or "python",
            "mlflow.source.git.commit": tags["git_sha"],
        }
    )
    for lib in LIBRARIES:
        try:
            tags[f"version.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            tags[f"version.{lib}"] = "missing"
    return tags


def trial_tags(flat: dict[str, Any]) -> dict[str, str]:
    """Searchable tags: method, corruption with its kind, family and level as the corruption declares
    them (and the level under its parameter's name: ``grid``, ``gamma``, ``severity``), dataset, seed."""
    corruption = parse(flat["data.corruption"])
    tags = {
        "method": flat["method"],
        "corruption": flat["data.corruption"],
        "corruption_kind": corruption.spec_name,
        "corruption_family": corruption.family,
        "dataset": flat["data.dataset"],
        "seed": str(flat["system.seed"]),
    }
    if corruption.main_param is not None:
        tags["corruption_level"] = tags[corruption.main_param] = str(getattr(corruption, corruption.main_param))
    return tags


def _store_missing(uri: str) -> bool:
    """A sqlite store that does not exist yet (an MlflowClient would create it)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def check_new_sweep(uri: str, experiment: str) -> None:
    """Refuse (ValueError, one line) a new sweep under a name the store already holds: a second
    parent with its own runs per trial would sit beside the first, and analysis would pool them."""
    if _store_missing(uri):
        return
    ensure_store(uri)  # another sweep may be creating it this moment
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    if exp.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow store {uri!r} holds experiment {experiment!r} as deleted; valid: --experiment NEW_NAME, "
            f"or purge it first (`mlflow gc --backend-store-uri {uri} --experiment-ids {exp.experiment_id}`)"
        )
    held = client.search_runs([exp.experiment_id], max_results=50_000)
    if not held:
        return
    parents = [r for r in held if r.data.tags.get("sweep") == "parent"]
    where = (
        "; ".join(
            f"parent run {r.info.run_id}" + (f" from {r.data.tags[STORAGE_TAG]}" if STORAGE_TAG in r.data.tags else "")
            for r in parents
        )
        or f"{len(held)} runs"
    )
    raise ValueError(
        f"MLflow store {uri!r} already holds experiment {experiment!r} ({where}); a second sweep under that name "
        f"would be pooled with it; valid: --resume with the sweep's own --storage-path, or --experiment NEW_NAME"
    )


def check_parent_run(uri: str, run_id: str) -> None:
    """--resume: the sweep's parent run must be in this store (else ``Run not found`` mid-launch)."""
    from mlflow.exceptions import MlflowException

    try:
        if _store_missing(uri):
            raise MlflowException("no store")
        ensure_store(uri)
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ValueError(
            f"--resume: the sweep's parent run {run_id} is not in MLflow store {uri!r}; "
            f"valid: the --mlflow-uri the sweep was launched with"
        )


def open_parent_run(uri: str, experiment: str, artifact_root: Path, state_file: Path, tags: dict[str, str]) -> str:
    """Create (or, on resume, reopen) the sweep's parent run; its id is kept in ``state_file``. The
    driver's first write: a new store is created here, after every check has passed."""
    ensure_store(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=(artifact_root / experiment).as_uri())
    )
    if state_file.exists():
        run_id = state_file.read_text().strip()
        client.update_run(run_id, status="RUNNING")
        if STORAGE_TAG in tags:  # sweeps from before the tag get it on their next launch
            client.set_tag(run_id, STORAGE_TAG, tags[STORAGE_TAG])
        return run_id
    run = client.create_run(exp_id, run_name=experiment, tags={**tags, "sweep": "parent"})
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(run.info.run_id)
    return run.info.run_id


def tag_run(uri: str, run_id: str, tags: dict[str, str]) -> None:
    """Set ``tags`` on a run (e.g. the parent's trial count, known once Tune's search is set up)."""
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def experiment_id(uri: str, run_id: str) -> str:
    """The MLflow experiment of a run (for the UI's URL)."""
    return MlflowClient(uri).get_run(run_id).info.experiment_id


def metric_key(*parts: str) -> str:
    """An MLflow metric name from table labels: MLflow allows letters, digits, ``_-. /`` only, so
    ``supervised@20`` becomes ``supervised_at20``."""
    return "/".join("".join(c if c.isalnum() or c in "_-." else "_" for c in str(p).replace("@", "_at")) for p in parts)


def log_summary(uri: str, parent_run_id: str, drops, claims, accuracy=None) -> None:
    """The sweep's results on its parent run, to compare sweeps in the MLflow UI: every cell of the
    drop summary (``analysis.drops.drop_summary``: arm, corruption, mean) as ``drop/<arm>/<corruption>``
    (percent, mean over seeds), the claim verdict counts ``claims_pass``, ``claims_fail``,
    ``claims_inconclusive``, ``claims_one_seed`` (the PASS/FAIL resting on one seed), and with
    ``accuracy`` (``analysis.drops.accuracy_summary``) the curves ``level_curve/<arm>/<family>``: the mean accuracy at each corrupted level, with the level as the
    step, so the parent's chart draws accuracy against grid size (integer levels only: MLflow's steps
    are integers, so gamma's fractional levels are left to the drop metrics)."""
    metrics = [
        Metric(metric_key("drop", r.arm, r.corruption), float(r.mean), 0, 0)
        for r in drops.itertuples()
        if r.mean == r.mean
    ]  # NaN: no cell
    counts = claims["verdict"].value_counts() if len(claims) else {}
    metrics += [Metric(f"claims_{v.lower()}", float(counts.get(v, 0)), 0, 0) for v in ("PASS", "FAIL", "INCONCLUSIVE")]
    if len(claims):  # the PASS/FAIL whose interval holds no training-seed noise
        from analysis.claims import one_seed_verdicts

        metrics.append(Metric("claims_one_seed", float(one_seed_verdicts(claims)), 0, 0))
    metrics += level_curves(accuracy) if accuracy is not None else []
    MlflowClient(uri).log_batch(parent_run_id, metrics=metrics)


def level_curves(accuracy) -> list[Metric]:
    """``level_curve/<arm>/<family>`` at step = level for every corrupted cell of an accuracy summary
    whose corruption has an integer level (``glo_4`` -> step 4 of ``level_curve/supervised/global``)."""
    from analysis.frame import describe

    out = []
    for r in accuracy.itertuples():
        _, family, level = describe(r.corruption)
        if r.mean == r.mean and family != "clean" and level == level and float(level).is_integer():
            out.append(Metric(metric_key("level_curve", r.arm, family), float(r.mean), 0, int(level)))
    return out


def recorded_final(client: MlflowClient, run) -> dict | None:
    """The final result of a trial's run if MLflow recorded it FINISHED with its final metrics, else None."""
    if run.info.status != "FINISHED":
        return None
    if run.info.artifact_uri.startswith("file:"):  # the sweeps' default store: read in place
        from mlflow.utils.file_utils import local_file_uri_to_path

        path = Path(local_file_uri_to_path(run.info.artifact_uri)) / FINAL_METRICS
        return json.loads(path.read_text()) if path.is_file() else None
    with tempfile.TemporaryDirectory() as folder, _no_progress_bar():
        try:
            return json.loads(Path(client.download_artifacts(run.info.run_id, FINAL_METRICS, folder)).read_text())
        except Exception:  # no such artifact: MlflowException or OSError, by store
            return None


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow draws a progress bar per download; a resume reads one small file per finished trial."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as bar

    before = os.environ.get(bar.name)
    os.environ[bar.name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(bar.name, None)
        else:
            os.environ[bar.name] = before


def recorded_finals(uri: str, parent_run_id: str) -> dict[str, dict]:
    """trial id -> final result of every trial of the sweep that MLflow recorded FINISHED.

    A driver killed with SIGKILL leaves Tune's experiment state as of its last snapshot (every
    ~10 s), which can predate a trial's end: ``--resume`` hands these to the trainable, which
    reports them again instead of training the trial a second time.
    """
    client = MlflowClient(uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    finished = client.search_runs(
        [exp_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'FINISHED'", max_results=50_000
    )
    finals = {run.data.tags.get(TRIAL_TAG): recorded_final(client, run) for run in finished}
    return {trial_id: final for trial_id, final in finals.items() if trial_id and final is not None}


def close_runs(uri: str, parent_run_id: str, status: str = "FINISHED") -> int:
    """End the parent run and mark any child still RUNNING as KILLED; returns how many were."""
    client = MlflowClient(uri)
    exp_id = client.get_run(parent_run_id).info.experiment_id
    stale = client.search_runs([exp_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'")
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_terminated(parent_run_id, status)
    return len(stale)


class SampleRenderer:
    """Draws a few test images under a corruption (a small picklable object: 8 images)."""

    def __init__(self, images) -> None:
        self.images = images  # (n, C, H, W) uint8

    @classmethod
    def from_dataset(cls, data, n: int = 8) -> SampleRenderer:
        import torch

        pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[:n]
        return cls(data.test.images[pick].clone())

    def __call__(self, spec: str):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        corrupted = parse(spec)(self.images, torch.Generator().manual_seed(0))
        fig, axes = plt.subplots(2, len(self.images), figsize=(1.2 * len(self.images), 2.6))
        for j in range(len(self.images)):
            for i, batch in enumerate((self.images, corrupted)):
                axes[i, j].imshow(batch[j].permute(1, 2, 0).numpy(), interpolation="nearest")
                axes[i, j].set_axis_off()
        fig.suptitle(f"top: ori, bottom: {spec}", fontsize=9)
        fig.tight_layout()
        plt.close(fig)
        return fig


def dataset_record(data) -> dict[str, str]:
    """What MLflow shows of a trial's dataset: its spec as name, a digest of its contents (labels,
    shapes and a strided sample of the pixels of every split) and its sizes as profile."""
    import hashlib

    splits = {s: getattr(data, s) for s in ("train", "test", "unlabeled") if getattr(data, s, None) is not None}
    digest = hashlib.sha256()
    for name, split in splits.items():
        images = split.images
        digest.update(f"{name}{tuple(images.shape)}".encode())
        digest.update(split.labels.numpy().tobytes())
        if split.streamed:  # files, not pixels: their names (decoding 1000 large JPEGs here takes seconds)
            digest.update("\n".join(images.paths).encode())
        else:
            digest.update(images[:: max(1, len(images) // 1000)].contiguous().numpy().tobytes())
    profile = {
        **{f"{s}_images": len(split.labels) for s, split in splits.items()},
        "classes": data.num_classes,
        "image_size": list(data.image_size),
    }
    return {
        "name": data.name,
        "digest": digest.hexdigest()[:16],
        "source_type": "local",
        "source": data.name,
        "profile": json.dumps(profile),
    }


class MLflowTrialWriter(tune.Callback):
    """Driver-side Tune callback: one child run per trial, params, per-epoch metrics, artifacts."""

    def __init__(
        self, uri: str, parent_run_id: str, render_samples=None, dataset: dict[str, str] | None = None
    ) -> None:
        self.uri, self.parent_run_id, self.render_samples = uri, parent_run_id, render_samples
        self.dataset = dataset  # ``dataset_record``: logged as each new run's input (the UI's Dataset column)
        self._runs: dict[str, tuple[str, int]] = {}  # trial_id -> (run_id, last logged step)
        self._final: set[str] = set()  # trials whose run MLflow recorded FINISHED: never written again
        self._tagged: set[str] = set()  # trials whose memory-format tags are written
        self._client: MlflowClient | None = None
        self._version: dict[str, str] = {}  # set in setup(), which Tune calls on every launch and resume

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "_runs": {}, "_tagged": set(), "_final": set()}

    def setup(self, **info) -> None:
        # Here, not in __init__: `Tuner.restore` brings back the writer pickled at the first launch, and
        # runs created after a resume are tagged with the code that resumes them, not with the launch's.
        self._version = code_version()
        self._tagged, self._final = set(), set()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.uri)
        return self._client

    def run_for(self, trial) -> tuple[str, int]:
        """Get or create the trial's run (by tag), returning (run_id, last logged epoch)."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        exp_id = self.client.get_run(self.parent_run_id).info.experiment_id
        found = self.client.search_runs(
            [exp_id], f"tags.{TRIAL_TAG} = '{trial.trial_id}' and tags.`{PARENT_TAG}` = '{self.parent_run_id}'"
        )
        if found and recorded_final(self.client, found[0]) is not None:
            # Recorded before a kill -9 that left Tune's state stale: the run stays as it is.
            run_id, last = found[0].info.run_id, -1
            self._final.add(trial.trial_id)
        elif found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "loss")
            last = max((m.step for m in history), default=-1)
            self.client.update_run(run_id, status="RUNNING")
        else:
            flat = trial_config(trial.config)
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id, **trial_tags(flat), **self._version}
            run_id = self.client.create_run(exp_id, run_name=run_name(flat), tags=tags).info.run_id
            params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in sorted(flat.items())]
            self.client.log_batch(run_id, params=params)
            if self.dataset:
                self.client.log_inputs(
                    run_id,
                    datasets=[DatasetInput(Dataset(**self.dataset), [InputTag("mlflow.data.context", "training")])],
                )
            last = -1  # an untrained (epochs 0) trial reports once, at step 0
        self._runs[trial.trial_id] = (run_id, last)
        return run_id, last

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id, last = self.run_for(trial)
        if trial.trial_id in self._final:
            return
        # Once per launch (it may differ after a move), from a live report: a replayed one is the last launch's.
        if "memory_format" in result and trial.trial_id not in self._tagged and not result.get(REPLAYED):
            self.client.log_batch(run_id, tags=[RunTag(k, str(result[k])) for k in _MEMORY_FORMAT_TAGS if k in result])
            self._tagged.add(trial.trial_id)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= last:  # re-run epochs after a resume: already recorded
            return
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [
            Metric(k, float(v), ts, step)
            for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and _is_metric(k)
        ]
        self.client.log_batch(run_id, metrics=metrics)
        self._runs[trial.trial_id] = (run_id, step)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id, _ = self.run_for(trial)
        if trial.trial_id in self._final:
            return
        result = dict(trial.last_result or {})
        # The final report, per-class values included: analysis reads this one artifact per run.
        final = {k: v for k, v in result.items() if _is_metric(k) or k in _FINAL_EXTRAS or metrics.per_class_name(k)}
        self.client.log_dict(run_id, final, FINAL_METRICS)
        for key in metrics.names("artifact"):
            if key in result:
                self.client.log_dict(run_id, {key: result[key]}, f"{key}.json")
        classes = per_class(result)  # the same values grouped by name and class, for a reader of the run
        if classes:
            self.client.log_dict(run_id, classes, PER_CLASS_ARTIFACT)
        if self.render_samples is not None:
            self.client.log_figure(
                run_id, self.render_samples(trial_config(trial.config)["data.corruption"]), "corrupted_samples.png"
            )
        # The last epoch is always checkpointed (by Tune, or Ray Train in a data-parallel trial); an
        # untrained trial has none.
        if getattr(trial, "checkpoint", None) is not None:
            state = Path(trial.checkpoint.path) / STATE_FILE
            if not state.is_file() and getattr(trial, "local_path", None):  # a stand-in (sweeps.records)
                on_disk = trial_checkpoints(Path(trial.local_path))
                state = on_disk[-1] if on_disk else state
            log_backbone(self.client, run_id, state)
        elif (state := ray_train_adapter.trial_checkpoint(result)) is not None and state.exists():
            log_backbone(self.client, run_id, state)
        self.client.set_terminated(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id, _ = self.run_for(trial)
        if trial.trial_id in self._final:
            return
        error = str(getattr(trial, "error_file", "") or "")
        self.client.set_tag(run_id, "error", crash_report(trial) or _error_text(trial) or error or "trial failed")
        self.client.set_terminated(run_id, "FAILED")


BACKBONE_ARTIFACT = "backbone.pt"


def backbone_weights(state_file: Path) -> dict:
    """The trained backbone's ``state_dict`` from a trial's checkpoint (``timm`` key names: the
    ``backbone.`` prefix, and ``_orig_mod.`` of a compiled one, removed)."""
    import torch

    state = torch.load(state_file, map_location="cpu", weights_only=True)["method"]
    return {
        k.removeprefix("backbone.").removeprefix("_orig_mod."): v for k, v in state.items() if k.startswith("backbone.")
    }


def log_backbone(client: MlflowClient, run_id: str, state_file: Path) -> None:
    """``backbone.pt`` on the trial's run: its final backbone weights, loadable with
    ``torch.load(path, weights_only=True)`` into the model ``trainables.build`` makes from the run's params."""
    import torch

    if not state_file.is_file():
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / BACKBONE_ARTIFACT
        torch.save(backbone_weights(state_file), path)
        client.log_artifact(run_id, str(path))


# What is recorded where is declared once, in trainables.metrics.
_METRIC_KEYS = frozenset(metrics.names("metric"))
_FINAL_EXTRAS = frozenset(
    {
        *metrics.names("final"),
        *metrics.names("artifact"),
        *metrics.names("tag"),
        *metrics.names("step"),
        "node_id",
        "workers",
    }
)  # + the node Tune ran it on, and a data-parallel trial's workers
_MEMORY_FORMAT_TAGS = metrics.names("tag")  # channels_last or contiguous, and why
PER_CLASS_ARTIFACT = metrics.PER_CLASS_ARTIFACT


def _is_metric(key: str) -> bool:
    """An MLflow metric (per epoch): per-class values are not (30 charts would bury loss and kNN on a
    run's page); their final values go to ``per_class.json``."""
    return key in _METRIC_KEYS


def per_class(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"intra_distance": {"0": 1.2, ...}, ...}`` from a result's ``<name>/<class>`` keys (the
    ``per_class.json`` artifact of a finished trial's run); empty when the result has none."""
    out: dict[str, dict[str, float]] = {}
    for key, value in result.items():
        name = metrics.per_class_name(key)
        if name is not None:
            out.setdefault(name, {})[key.partition("/")[2]] = float(value)
    return out


def run_name(flat: dict[str, Any]) -> str:
    """``<arm>-<corruption>-s<seed>``, e.g. ``untrained-glo_4-s0`` or ``supervised@20-ori-s1``: the
    arm as the tables name it (``analysis.frame.arm_of``). Names MLflow runs and trial folders."""
    from analysis.frame import config_arm

    arm = config_arm(flat)
    return f"{arm}-{flat.get('data.corruption', 'ori')}-s{flat.get('system.seed', 0)}"


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path else ""
    except OSError:
        return ""
