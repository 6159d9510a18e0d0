"""Run a validated plan on Ray Tune: cluster connection, MLflow parent run, Tuner, summary.

Distribution is Ray's job: trials are placed by Tune's scheduler with the requested (possibly
fractional) resources, and a data-parallel trial's workers (``resources["workers"]`` > 1) by Ray
Train (``trainables.ray_train_adapter``); nothing here schedules by hand.

Before Ray starts, the MLflow store is checked against the launch (a new sweep's name is not taken,
a resumed sweep's parent run is there) and, on ``--resume``, the local Ray processes a killed
driver left behind are stopped (``sweeps.records``). A resume also hands the trainable the experiment
folder (newer checkpoints than Tune's own record may lie there) and the final results MLflow
recorded (trials that ended after Tune's last snapshot are not trained again).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

from sweeps import records, tracking
from sweeps.launch import Plan
from sweeps.options import SweepError, SweepOptions, searched_keys
from sweeps.progress import Progress, ended, print_summary
from sweeps.progress_csv import ProgressCSV
from sweeps.resume import save_plan
from sweeps.tracking import MLflowTrialWriter, SampleRenderer, close_runs, code_version, open_parent_run
from trainables import tune_adapter

# Tune's snapshot warning fires when every epoch checkpoints; it is harmless here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
PARENT_FILE = "mlflow_parent_run_id"  # in the experiment folder: the sweep's parent MLflow run


def connect(address: str | None) -> None:
    """``auto`` or ``host:port`` (checked by ``sweeps.preflight``): join a running cluster; None: start a local instance."""
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(address="local", **kwargs)  # never a stale /tmp/ray/ray_current_cluster
        return
    try:
        with _held_stderr():
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise SweepError(
            f"--address {address!r}: no Ray cluster there ({str(err).splitlines()[0]}); valid: a running cluster's address, or omit --address"
        ) from None


@contextlib.contextmanager
def _held_stderr():
    """Holds back what is written to file descriptor 2 while joining a cluster: Ray's C++ client logs
    a warning a second for ~20 s at an address that answers but is no Ray head (a proxy, another
    gRPC server). The text is shown afterwards unless joining failed (one line says why) or was
    interrupted."""
    sys.stderr.flush()
    saved = os.dup(2)
    replay = True
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except (ConnectionError, KeyboardInterrupt):
            replay = False
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if replay:
                held.seek(0)
                text = held.read()
                while text:
                    text = text[os.write(2, text) :]


EPSILON = 1e-9  # float slack: 4 CPUs hold 5 trials of 0.79 + 0.01 although 4.0 // 0.8 == 4.0


def trial_cpus(resources: dict[str, float]) -> float:
    """CPUs one trial holds: its own, plus ``DRIVER_CPU`` for a data-parallel trial's Tune function."""
    return resources["cpu"] + (tune_adapter.DRIVER_CPU if resources.get("workers", 1) > 1 else 0.0)


def check_resources(resources: dict[str, float], total: dict[str, float]) -> None:
    """Refuse requests a cluster of ``total`` resources can never satisfy (Tune would wait forever).

    A data-parallel trial also holds ``DRIVER_CPU`` for its Tune function beside its workers' CPUs."""
    gpus, cpus = total.get("GPU", 0.0), total.get("CPU", 0.0)
    if resources["gpu"] > 0 and gpus < resources["gpu"]:
        raise SweepError(
            f"--gpus-per-trial {resources['gpu']:g} but the Ray cluster has {gpus:g} GPUs; valid: 0 on this cluster, or add GPU nodes"
        )
    need = trial_cpus(resources)
    if need > cpus + EPSILON:
        driver = need - resources["cpu"]
        also = f" plus {driver:g} for its Tune function" if driver else ""
        raise SweepError(
            f"--cpus-per-trial {resources['cpu']:g}{also} but the Ray cluster has {cpus:g} CPUs; "
            f"valid: <= {cpus - driver:g}"
        )


def data_parallel_concurrency(resources: dict[str, float], total: dict[str, float]) -> int | None:
    """How many data-parallel trials a cluster of ``total`` resources holds at once (None for
    single-process trials).

    A data-parallel trial's Tune function holds almost nothing and its workers wait until Ray Train
    gets all of them, so without a cap every trial would start a Train run that waits (Ray's Train +
    Tune guide: set ``max_concurrent_trials`` from the limiting resource). A trial holds its workers'
    CPUs *and* its Tune function's ``DRIVER_CPU``: on 2 CPUs, two trials of 1 CPU each do not fit
    (the second one's workers would wait for the first one's CPUs)."""
    if resources.get("workers", 1) <= 1:
        return None
    by_gpu = total.get("GPU", 0.0) // resources["gpu"] if resources["gpu"] > 0 else float("inf")
    by_cpu = (total.get("CPU", 0.0) + EPSILON) // trial_cpus(resources)
    return max(1, int(min(by_gpu, by_cpu)))


def execute(plan: Plan) -> int:
    """Run every trial of the plan; returns 0 if all finished, 1 if some failed, 130 if interrupted."""
    started = time.time()
    check_store(plan)
    if plan.resume and (stale := records.stop_stale_ray(plan.experiment_path)):
        print(
            f"stopped {len(stale)} Ray process(es) that the experiment's killed driver left running "
            f"(pids {', '.join(map(str, stale))})",
            flush=True,
        )
    connect(plan.address)
    check_resources(plan.opts["resources"], ray.cluster_resources())
    plan.storage.mkdir(parents=True, exist_ok=True)
    if not plan.resume:
        save_plan(plan)
    if plan.address is None:  # a local Ray instance: its processes are this driver's
        records.record_driver(plan.experiment_path)
    try:
        return _run(plan, started)
    finally:
        records.forget_driver(plan.experiment_path)


def check_store(plan: Plan) -> None:
    """Before Ray starts: a new sweep's name is not in the MLflow store yet; a resumed one's parent run is."""
    parent_file = plan.experiment_path / PARENT_FILE
    try:
        if not plan.resume:
            tracking.check_new_sweep(plan.mlflow_uri, plan.experiment)
        elif parent_file.exists():
            tracking.check_parent_run(plan.mlflow_uri, parent_file.read_text().strip())
    except ValueError as err:
        raise SweepError(str(err)) from None


def _run(plan: Plan, started: float) -> int:
    tags = {
        **code_version(),
        "sweep_name": plan.sweep.name,
        "dataset": plan.data.name,
        tracking.STORAGE_TAG: str(plan.experiment_path),
    }
    parent = open_parent_run(
        plan.mlflow_uri, plan.experiment, plan.storage / "mlartifacts", plan.experiment_path / PARENT_FILE, tags
    )
    finished = tracking.recorded_finals(plan.mlflow_uri, parent) if plan.resume else {}
    trainable = tune_adapter.trainable(
        plan.data, plan.opts["resources"], str(plan.experiment_path), finished, int(plan.opts.get("max_failures", 2))
    )
    progress = Progress(len(plan.cells), tuple(searched_keys(plan.opts)))
    status = "FAILED"
    try:
        if plan.resume:
            records.stand_in_for_pruned_checkpoints(plan.experiment_path)
        tuner = _tuner(plan, trainable, parent, progress)
        if not plan.resume:  # a search's trials are its num_samples, not its one base cell
            tracking.tag_run(plan.mlflow_uri, parent, {"trials": str(progress.total)})
        results = tuner.fit()
        failed = len(results.errors)
        # Ctrl+C / SIGINT: Tune saves its state and returns with trials that never finished, and (its
        # variant generator makes trials as slots free up) without those it had not made yet.
        unfinished = sum(1 for r in results if r.error is None and not ended(r)) + max(0, progress.total - len(results))
        status = "FAILED" if failed else "KILLED" if unfinished else "FINISHED"
    finally:
        records.remove_stand_ins(plan.experiment_path)
        killed = close_runs(plan.mlflow_uri, parent, status)
        if killed:
            print(f"marked {killed} unfinished MLflow run(s) KILLED; `--resume` continues them", flush=True)
    print_summary(plan, results, parent, time.time() - started, progress.total)
    if unfinished and not failed:
        print(
            f"interrupted with {unfinished} trial(s) unfinished; continue with the same command and --resume",
            flush=True,
        )
        return 130
    return 0 if not failed else 1


def _tuner(plan: Plan, trainable, parent: str, progress: Progress) -> tune.Tuner:
    # Tune adds a TensorBoard logger (and prints a TensorBoard hint) unless its automatic loggers
    # are off; the JSON and CSV ones analysis reads are passed explicitly instead.
    explicit = not plan.resume or records.explicit_loggers(plan.experiment_path)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1" if explicit else "0"
    if plan.resume:
        print(f"resuming {plan.experiment_path}", flush=True)
        progress.total = records.trial_total(plan.experiment_path) or progress.total  # a search's num_samples
        return tune.Tuner.restore(str(plan.experiment_path), trainable, resume_unfinished=True, resume_errored=True)
    setup = plan.sweep.tune_setup or grid_setup
    param_space, tune_kwargs = setup(plan.opts, plan.experiment_path, plan.cells)
    param_space.update({"sweep.gpu": plan.opts["resources"]["gpu"], **plan.sweep_keys})
    fits = data_parallel_concurrency(plan.opts["resources"], ray.cluster_resources())
    concurrent = plan.opts.get("max_concurrent") or fits
    if fits is not None and concurrent > fits:  # more may join an autoscaling cluster: a warning, not a cap
        print(
            f"warning: --max-concurrent {concurrent} starts more data-parallel trials than the cluster holds "
            f"now ({fits}); the extra trials' Ray Train workers wait for other trials' CPUs/GPUs",
            flush=True,
        )
    if concurrent:
        tune_kwargs.setdefault("max_concurrent_trials", int(concurrent))
    writer = MLflowTrialWriter(
        plan.mlflow_uri,
        parent,
        SampleRenderer.from_dataset(plan.data),
        plan.dataset_record,
    )
    run_config = tune.RunConfig(
        name=plan.experiment,
        storage_path=str(plan.storage),
        verbose=0,
        callbacks=[JsonLoggerCallback(), ProgressCSV(), writer, progress],
        failure_config=tune.FailureConfig(max_failures=int(plan.opts.get("max_failures", 2))),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    cell = param_space["sweep.cell"]
    grid = len(cell["grid_search"]) if isinstance(cell, dict) and "grid_search" in cell else 1
    progress.total = grid * int(tune_kwargs.get("num_samples", 1))
    records.save_trial_total(plan.experiment_path, progress.total)
    tune_kwargs.setdefault("reuse_actors", reuse_actors(plan.opts["resources"], plan.opts.get("reuse_workers")))
    tune_config = tune.TuneConfig(trial_dirname_creator=trial_dirname, **tune_kwargs)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def reuse_actors(resources: dict[str, float], reuse_workers: bool | None) -> bool:
    """Whether a finished trial's process runs the next trial of the same resources (Tune's ``reuse_actors``).

    Single-process trials: yes unless the YAML's ``reuse_workers`` is false (None: unset). torch, timm
    and the dataset are then imported and unpacked once per process, not once per trial (~6 s each on
    a 2-core CPU); ``run_trial`` sets all of its state per trial (seeded generators, no global RNG).

    Data-parallel trials: never. It saves little there (Ray Train starts new workers for every trial),
    and it stalled sweeps: a reused Tune function gets 2 s to end (``TUNE_FUNCTION_THREAD_TIMEOUT_S``),
    and when one was still waiting for Ray Train to let its workers go, Ray 2.60 logged "Could not
    re-use actor" and never started the next trial (``ray_train_adapter.relay`` now ends it sooner)."""
    return reuse_workers is not False and resources.get("workers", 1) <= 1


def trial_dirname(trial) -> str:
    """A trial's folder: ``<arm>-<corruption>-s<seed>-<trial id>``, e.g. ``untrained-glo_4-s0-3f2a1_00012``
    (the arm as the tables name it; the trial id keeps it unique)."""
    return f"{tracking.run_name(tune_adapter.trial_config(trial.config))}-{trial.trial_id}"


def grid_setup(opts: SweepOptions, experiment_path: Path, cells: list[dict]) -> tuple[dict, dict]:
    """Every cell once: a grid over complete flat configs."""
    return {"sweep.cell": tune.grid_search(cells)}, {}
