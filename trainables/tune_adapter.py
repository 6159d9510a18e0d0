"""``run_trial`` as a Tune function trainable. With its sibling ``trainables.ray_train_adapter`` (a
data-parallel trial through Ray Train, chosen here by ``trainable``), the only modules outside
``sweeps/`` that import Ray.

Ray's reporting API has changed four times; it is confined here. The trial config arrives as the
flat dict of ``TrialConfig.to_flat`` plus ``sweep.*`` keys that belong to the sweep (resources,
fault injection), which are stripped before the config is built.

* metrics: ``tune.report`` once per epoch; a ``tune.Checkpoint`` rides along every
  ``system.checkpoint_every`` epochs (the state ``run_trial`` hands to ``save``);
* resume: the newest loadable checkpoint of the trial on start (FailureConfig retries and
  ``Tuner.restore``): ``tune.get_checkpoint()``, or a newer one on disk when the driver was killed
  after its last experiment snapshot; a trial the driver knows finished reports its final result
  again instead of training (``finished``);
* data: the decoded dataset comes through Ray's object store (``tune.with_parameters``), so
  concurrent trials on a node share one copy;
* GPU: a trial that holds a fraction g of a GPU caps its own allocator at g (Ray does not);
* crashes: a worker killed by a fatal signal (a native kernel's SIGSEGV) leaves its Python traceback
  in the trial folder, which the driver turns into ``crash_report`` (Ray itself only says that the
  actor died).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.data.datasets import ImageDataset, Split
from trainables.data.stream import StreamedImages
from trainables.loop import run_trial
from trainables.schema import (
    CRASH_LOG,
    STATE_FILE,
    SWEEP_PREFIX,  # noqa: F401  (re-exported)
    checkpoint_files,
    save_state,
    state_epoch,
    trial_config,
)

REPLAYED = (
    "replayed"  # result key: a result reported again after a resume (a finished trial's final one, or an epoch's)
)


def pack_dataset(data: ImageDataset) -> dict[str, Any]:
    """Numpy arrays for the object store (zero-copy reads on every node's workers); a streamed
    split travels as its file list (the files must be readable on every node)."""
    splits = {s: getattr(data, s) for s in ("train", "test", "unlabeled") if getattr(data, s) is not None}
    return {
        "name": data.name,
        "classes": data.classes,
        **{s: (sp.images if sp.streamed else sp.images.numpy(), sp.labels.numpy()) for s, sp in splits.items()},
    }


def unpack_dataset(packed: dict[str, Any]) -> ImageDataset:
    """Inverse of ``pack_dataset``; tensors view the shared read-only buffers (never written)."""
    splits = {}
    for s in ("train", "test", "unlabeled"):
        if s in packed:
            images, labels = packed[s]
            if isinstance(images, StreamedImages):
                splits[s] = Split(images, torch.from_numpy(labels.copy()), in_memory=False)
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                splits[s] = Split(torch.from_numpy(images), torch.from_numpy(labels))
    return ImageDataset(name=packed["name"], classes=tuple(packed["classes"]), **splits)


def train(
    config: dict[str, Any],
    dataset: dict[str, Any] | None = None,
    experiment_dir: str | None = None,
    finished: dict[str, dict] | None = None,
) -> None:
    """Tune function trainable: one trial of ``run_trial`` with checkpoints and resume.

    Args:
        config: the Tune config (see ``trial_config``).
        dataset: ``pack_dataset``'s output, shared through the object store (else loaded from config).
        experiment_dir: the Tune experiment folder, where newer checkpoints than Tune's may lie.
        finished: trial id -> final result of trials that already ended (the driver's records):
            such a trial reports it again, marked ``REPLAYED``, and trains nothing.
    """
    trial_id = tune.get_context().get_trial_id()
    if finished and trial_id in finished:
        tune.report({**finished[trial_id], REPLAYED: True, "done": True})
        return
    _cap_gpu_memory(float(config.get("sweep.gpu", 0.0)))
    resume = _resume(
        tune.get_checkpoint(), experiment_dir, trial_id, int(trial_config(config).get("optim.epochs") or 0)
    )
    pending: dict[str, Any] = {}
    fail_at = config.get("sweep.fail_once_at_epoch")

    def save(state: dict) -> None:
        pending["state"] = state

    def report(metrics: dict) -> None:
        if fail_at is not None and metrics["epoch"] == fail_at and _first_attempt():
            raise RuntimeError(f"injected failure at epoch {fail_at} (sweep.fail_once_at_epoch)")
        if metrics.get("done"):  # where the trial ran, for cluster tests and debugging
            metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
        state = pending.pop("state", None)
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_state(state, Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    data = unpack_dataset(dataset) if dataset is not None else None
    with _fatal_signal_log(Path(tune.get_context().get_trial_dir()) / CRASH_LOG):
        run_trial(trial_config(config), report, resume=resume, save=save, dataset=data)


def trainable(
    dataset: ImageDataset | None,
    resources: dict[str, float],
    experiment_dir: str | None = None,
    finished: dict[str, dict] | None = None,
    max_failures: int = 2,
):
    """``train`` with the dataset in the object store and per-trial resources attached (``train``
    documents ``experiment_dir`` and ``finished``).

    ``resources["workers"]`` > 1: a data-parallel trial (``ray_train_adapter.train``), whose Tune
    function only drives Ray Train's workers (``resources`` split over them, one whole GPU each) and
    so holds a token CPU share; ``max_failures`` bounds their restarts."""
    workers = int(resources.get("workers", 1))
    if workers > 1:
        return _data_parallel(dataset, resources, workers, experiment_dir, finished, max_failures)
    params = {
        "dataset": pack_dataset(dataset) if dataset is not None else None,
        "experiment_dir": experiment_dir,
        "finished": finished or None,
    }
    params = {k: v for k, v in params.items() if v is not None}
    fn = tune.with_parameters(train, **params) if params else train
    return tune.with_resources(fn, {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0)})


DRIVER_CPU = 0.01  # a data-parallel trial's Tune function: it waits on its workers (Ray's docs use 0.01 too)


def _data_parallel(dataset, resources, workers, experiment_dir, finished, max_failures):
    from trainables import ray_train_adapter

    params = {
        "workers": workers,
        "use_gpu": resources.get("gpu", 0) > 0,
        "cpus_per_worker": resources.get("cpu", 1) / workers,
        "max_failures": max_failures,
        # A reference inside a tuple reaches the workers unresolved: they read the one shared copy.
        "dataset_ref": (ray.put(pack_dataset(dataset)),) if dataset is not None else None,
        "experiment_dir": experiment_dir,
        "finished": finished or None,
    }
    fn = tune.with_parameters(ray_train_adapter.train, **{k: v for k, v in params.items() if v is not None})
    return tune.with_resources(fn, {"cpu": DRIVER_CPU})


def _resume(checkpoint: tune.Checkpoint | None, experiment_dir: str | None, trial_id: str, epochs: int) -> dict | None:
    """``_resume_state``; when that is newer than Tune's checkpoint (the driver died before it took in
    the report that carried it), that epoch's metrics are reported again (``REPLAYED``), so the
    driver's records get them (the MLflow writer skips an epoch it has)."""
    state, path = _resume_state(checkpoint, experiment_dir, trial_id)
    tunes = os.path.realpath(Path(checkpoint.path) / STATE_FILE) if checkpoint is not None else None
    if state and path is not None and os.path.realpath(path) != tunes:
        replay(state.get("history", [])[-1:], epochs)
    return state


def replay(history: list[dict[str, Any]], epochs: int) -> None:
    """Report these epochs' metrics again, marked ``REPLAYED``: the driver's records get those its
    last launch never took in, and the MLflow writer skips the epochs it has. Not the last epoch's:
    that one is the final report, which the resumed ``run_trial`` makes again anyway."""
    for metrics in history:
        if metrics.get("epoch", epochs) < epochs:
            tune.report({**metrics, REPLAYED: True})


def _resume_state(
    checkpoint: tune.Checkpoint | None, experiment_dir: str | None, trial_id: str
) -> tuple[dict | None, Path | None]:
    """The newest loadable state of this trial and its path on disk, or (None, None) to start from scratch.

    After a kill -9 of the driver, ``Tuner.restore`` rebuilds trials from Tune's last experiment
    snapshot (taken every ~10 s), which can predate a trial's newest checkpoints or the trial
    itself (it then restarts in a new folder with the same trial id). So every checkpoint of this
    trial id in the experiment folder is a candidate, the latest epoch first (then the most recently
    written); one that does not load (torn by the kill, or refused by ``weights_only``) is skipped
    with a warning.
    """
    found = []
    if experiment_dir and Path(experiment_dir).is_dir():
        # Newest first: the latest epoch (epoch.txt), then the latest written (checkpoints from before it).
        found = sorted(
            checkpoint_files(Path(experiment_dir), trial_id), key=lambda p: (state_epoch(p), _mtime(p)), reverse=True
        )
    for path in found:
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as err:  # any unreadable checkpoint: try the next newest
            print(
                f"skipping checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                file=sys.stderr,
                flush=True,
            )
    if checkpoint is None:  # nothing on disk here (remote storage): Tune's own record
        return None, None
    with checkpoint.as_directory() as folder:
        if not (Path(folder) / STATE_FILE).exists():  # a stand-in (sweeps.records): nothing to resume from
            print(f"no loadable checkpoint of trial {trial_id}: it starts from scratch", file=sys.stderr, flush=True)
            return None, None
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True), None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted meanwhile
        return float("-inf")


def _cap_gpu_memory(fraction: float) -> None:
    """Ray admits trials by fraction but does not isolate memory: cap our own allocator."""
    if torch.cuda.is_available() and 0 < fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction)


def _first_attempt() -> bool:
    """True once per trial (a marker in the trial folder survives FailureConfig retries)."""
    marker = Path(tune.get_context().get_trial_dir()) / ".injected_failure"
    if marker.exists():
        return False
    marker.touch()
    return True


_ATTEMPT = "--- worker pid "
# faulthandler's names for the signals it handles (CPython Modules/faulthandler.c)
_FATAL = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}


@contextlib.contextmanager
def _fatal_signal_log(path: Path):
    """While the trial runs, a fatal signal dumps every thread's Python stack to ``path`` (appended
    per attempt, headed by the worker's pid and stderr log); afterwards faulthandler writes to
    stderr again, as Ray sets it up."""
    with open(path, "a") as log:
        stderr = ""
        with contextlib.suppress(OSError):  # Ray's worker-<id>.err, where native libraries print
            stderr = f", stderr {os.readlink('/proc/self/fd/2')}"
        log.write(f"{_ATTEMPT}{os.getpid()}{stderr}\n")
        log.flush()
        faulthandler.enable(file=log, all_threads=True)
        try:
            yield
        finally:
            faulthandler.enable(file=sys.stderr, all_threads=False)


def crash_report(trial, lines: int = 8) -> str | None:
    """``SIGSEGV in the worker; last lines of its log: ...`` when the trial's worker died by a fatal
    signal, else None. Driver side: reads the trial folder's ``CRASH_LOG``, which is here on a
    local run (on a cluster only with shared storage; otherwise Ray's own error stays the report).
    The lines shown are the innermost frames of the thread that ran the trial."""
    try:
        text = (Path(trial.local_path) / CRASH_LOG).read_text(errors="replace")
    except (OSError, TypeError):
        return None
    attempt = text.rpartition(_ATTEMPT)[2]
    fatal = re.search(r"^Fatal Python error: (.+)$", attempt, re.M)
    if fatal is None:
        return None
    name = _FATAL.get(fatal.group(1).strip(), fatal.group(1).strip())
    header = attempt.splitlines()[0]
    stderr = header.split(", stderr ", 1)[1] if ", stderr " in header else None
    stacks = re.split(r"\n\s*\n", attempt[fatal.end() :].strip())  # one block per thread
    ours = next((b for b in stacks if "trainables" in b), stacks[0] if stacks else "")
    shown = [fatal.group(0), *[line.rstrip() for line in ours.splitlines()[: lines + 1]]]
    if stderr:
        shown.append(f"(the worker's stderr: {stderr})")
    return f"{name} in the worker; last lines of its log:\n    " + "\n    ".join(shown)
