"""A data-parallel trial: ``run_trial`` on several processes through Ray Train, as a Tune trainable.

Ray's supported Tune + Train V2 pattern (docs: "Hyperparameter Tuning with Ray Tune", Train V2):
the Tune function trainable (``train``) only builds and fits a ``TorchTrainer``; Ray Train starts
the workers and their process group (gloo on CPUs, NCCL on GPUs) and restarts them after a worker
fails; ``Forward`` hands rank 0's reports to the Tune function, which reports them to Tune, so the
driver's MLflow writer keeps one run per trial. Inside the workers only Train V2's API is used
(``ray.train.report``, ``ray.train.get_checkpoint``); in the Tune function only ``ray.tune``'s.

* the final report (``done``) reaches Tune only after ``TorchTrainer.fit`` has returned (``relay``):
  Tune ends a trial on it, and with Ray's ``TuneReportCallback`` (which forwards it at once) Tune
  ended the Tune function while Ray Train was still letting its workers go; their placement group
  was then never removed (Train's cleaner asks the State API, which needs the dashboard) and the
  next trial's workers waited for its CPUs forever;

* a trial that Tune stops while ``fit`` runs (ASHA at a rung) aborts its Train run first
  (``AbortOnStop``, the Tune function's ``cleanup``): the workers and their placement group go
  before the process does, for the same reason (an interrupted sweep needs none of this: its
  driver exits, and every placement group of its job goes with it);

* replay: Ray Train's workers run ahead of the Tune function (reports wait in a queue), and Tune
  holds no checkpoint of a data-parallel trial, so a trial that starts again (``--resume``, or a
  Tune retry) reports the epochs of the state it resumes from again, all but the final one
  (``tune_adapter.replay``). They are Tune results like any (``training_iteration``, result.json):
  the MLflow writer keeps only those its records lack, analysis and ASHA (``tune_hparams``) skip
  them, and Tune's iteration count is again the epoch;

* checkpoints: rank 0 writes the state once per ``system.checkpoint_every`` epochs with its report,
  into ``<trial folder>/data_parallel/checkpoint_*`` (Ray Train's storage; Tune records the path as
  ``checkpoint_path``); every rank restores the newest: Train's own (after a worker failure, or a
  Tune retry, which reuses the run name) or the newest on disk (``tune_adapter._resume_state``);
* data: the packed dataset stays in the object store; each worker reads it zero-copy;
* fault injection: ``sweep.fail_once_at_epoch`` makes the last rank raise once, after that epoch's
  checkpoint, so Train restarts the worker group.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray import tune
from ray.actor import ActorHandle
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
from ray.util.queue import Empty, Queue

from trainables import tune_adapter
from trainables.loop import run_trial
from trainables.schema import STATE_FILE, TRAIN_RUN_DIR, save_state, trial_config

MARKER = ".injected_worker_failure"  # in the trial folder: the injected failure happened
CONTROLLER = "train_controller"  # Forward's first item: {CONTROLLER: the Train run's controller actor}
ABORT_TIMEOUT_S = 30.0  # Ray's abort gives the workers 5 s before it kills them; past this the run is left as is
_running: dict[str, ActorHandle] = {}  # trial id -> controller of its Train run, while fit() runs


def train(
    config: dict[str, Any],
    workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    max_failures: int,
    dataset_ref: tuple | None = None,
    experiment_dir: str | None = None,
    finished: dict[str, dict] | None = None,
) -> None:
    """Tune function trainable: one trial of ``run_trial`` on ``workers`` Ray Train workers.

    Args:
        config: the Tune config (``tune_adapter.trial_config``).
        workers: ranks (processes) of the trial, one GPU each with ``use_gpu``.
        cpus_per_worker: CPU share of each worker.
        max_failures: worker-group restarts (from the newest checkpoint) before the trial fails.
        dataset_ref: ``(ObjectRef,)`` of ``tune_adapter.pack_dataset``'s output (else loaded from config).
        experiment_dir, finished: as for ``tune_adapter.train``.
    """
    context = tune.get_context()
    trial_id, trial_dir = context.get_trial_id(), context.get_trial_dir()
    if finished and trial_id in finished:
        tune.report({**finished[trial_id], tune_adapter.REPLAYED: True, "done": True})
        return
    state, path = tune_adapter._resume_state(None, experiment_dir, trial_id)
    # Any of the state's epochs may be missing from the driver's records (module docstring: replay).
    tune_adapter.replay((state or {}).get("history", []), int(trial_config(config).get("optim.epochs") or 0))
    reports = Queue(actor_options={"num_cpus": 0})  # rank 0's reports, from the Train controller
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "config": config,
            "dataset_ref": dataset_ref,
            "resume_path": str(path) if state is not None and path is not None else None,
            "trial_dir": trial_dir,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker, **_gpu(use_gpu)}
        ),
        run_config=ray.train.RunConfig(
            # The same (storage_path, name) on every attempt of the trial: Train resumes its own run.
            name=TRAIN_RUN_DIR,
            storage_path=trial_dir,
            callbacks=[Forward(reports)],
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    relay(trainer, reports, trial_id)


class AbortOnStop:
    """Mixin of ``train``'s Tune trainable (``train.__mixins__``): when Tune stops the trial while
    ``fit`` still runs (ASHA stops it at a rung), its Train run is aborted before the process ends.
    Ray Train's own cleaner for an ended controller needs the State API (the dashboard); without
    either, the workers' placement group outlived the trial and the next trials waited for its
    CPUs/GPUs. Tune calls ``cleanup`` only for a process it ends, not for one it reuses: data-parallel
    trials never reuse one (``sweeps.execute.reuse_actors``)."""

    def cleanup(self) -> None:
        try:
            abort(_running.pop(self.trial_id, None))
        finally:
            super().cleanup()


def abort(controller: ActorHandle | None) -> None:
    """Abort a Train run as Ray's Ctrl+C handler in ``TorchTrainer.fit`` does: the controller stops
    its workers, removes their placement group and ends its own process. None: no run is going."""
    if controller is None:
        return
    try:
        ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
    except ray.exceptions.RayActorError:
        pass  # the controller has ended its process: the abort's normal end
    except ray.exceptions.GetTimeoutError:
        print(f"warning: Ray Train's controller did not abort within {ABORT_TIMEOUT_S:.0f} s", flush=True)


train.__mixins__ = (AbortOnStop,)


class Forward(ray.train.UserCallback):
    """In the Train controller: its own handle first (``CONTROLLER``), then each of rank 0's reports
    into ``reports``, with its checkpoint's path."""

    def __init__(self, reports: Queue) -> None:
        self.reports = reports
        self.introduced = False

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None
    ) -> None:
        if not self.introduced:  # before any report: Tune can only stop the trial after one
            self.reports.put({CONTROLLER: ray.get_runtime_context().current_actor})
            self.introduced = True
        self.reports.put({**metrics[0], **({CHECKPOINT_PATH_KEY: checkpoint.path} if checkpoint else {})})


def relay(trainer: TorchTrainer, reports: Queue, trial_id: str) -> None:
    """Run ``trainer.fit()`` in a thread and report what it forwards to Tune; the final (``done``)
    report only once ``fit`` has returned, its workers and placement group gone. While ``fit`` runs,
    its controller is kept for ``AbortOnStop`` under ``trial_id``. Raises fit's error."""
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # re-raised in the Tune function: the trial fails (and may retry)
            # (Tune's function runner takes a SystemExit for a normal end: never re-raise one as it is)
            outcome["error"] = err if isinstance(err, Exception) else RuntimeError(f"Ray Train's fit ended: {err!r}")

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    final = None
    # A report is in the queue before the controller ends, so before fit returns: none is missed.
    while thread.is_alive() or not reports.empty():
        try:
            metrics = reports.get(timeout=1.0)
        except Empty:
            continue
        if CONTROLLER in metrics:
            _running[trial_id] = metrics[CONTROLLER]
        elif metrics.get("done"):
            final = metrics
        else:
            tune.report(metrics)
    _running.pop(trial_id, None)  # the run has ended: nothing to abort, and its controller may go
    if "error" in outcome:
        raise outcome["error"]
    if final is not None:
        tune.report(final)


def _gpu(use_gpu: bool) -> dict[str, float]:
    return {"GPU": 1} if use_gpu else {}


def _worker(loop: dict[str, Any]) -> None:
    """One rank: ``run_trial`` in the process group Ray Train set up; rank 0 checkpoints."""
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    config = loop["config"]
    resume = _newest(ray.train.get_checkpoint(), loop["resume_path"])
    data = tune_adapter.unpack_dataset(ray.get(loop["dataset_ref"][0])) if loop["dataset_ref"] else None
    fail_at = config.get("sweep.fail_once_at_epoch")
    pending: dict[str, Any] = {}

    def save(state: dict) -> None:  # only rank 0 saves (run_trial)
        pending["state"] = state

    def report(metrics: dict) -> None:
        if metrics.get("done") and rank == 0:
            metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id(), "workers": size}
        state = pending.pop("state", None)
        if state is None:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as folder:
                save_state(state, Path(folder))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        if fail_at is not None and metrics["epoch"] == fail_at and rank == size - 1 and _first_failure(loop):
            raise RuntimeError(f"injected worker failure at epoch {fail_at} on rank {rank} (sweep.fail_once_at_epoch)")

    run_trial(trial_config(config), report, resume=resume, save=save, dataset=data)


def _newest(checkpoint: ray.train.Checkpoint | None, path: str | None) -> dict | None:
    """The state with the most epochs of Train's latest checkpoint and the newest one on disk."""
    states = []
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            states.append(torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True))
    if path is not None:
        states.append(torch.load(path, map_location="cpu", weights_only=True))
    return max(states, key=lambda s: s["epoch"], default=None)


def _first_failure(loop: dict[str, Any]) -> bool:
    """True once per trial: a marker in the trial folder survives the worker group's restart."""
    marker = Path(loop["trial_dir"]) / MARKER
    if marker.exists():
        return False
    marker.touch()
    return True


def trial_checkpoint(result: dict[str, Any]) -> Path | None:
    """The state file of the checkpoint a data-parallel trial's result points to (driver side)."""
    path = result.get(CHECKPOINT_PATH_KEY)
    return Path(path) / STATE_FILE if path else None
