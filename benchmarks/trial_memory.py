"""Memory of 4 concurrent trials: one object-store copy of the dataset vs a private copy each.

Each trial evaluates the initial network (``optim.epochs=0``) on the full dataset, so every
worker reads every image. While they run, the driver samples the trial workers' proportional
set size (PSS: shared pages divided among their users) and unique set size (USS: private
pages) at their peak. The baseline, measured in the same run, is the same 4 trials each loading
the dataset itself (a private copy per trial): sharing should save about 3 dataset sizes.
Run: ``python benchmarks/trial_memory.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import ray  # noqa: E402
from ray import tune  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from trainables import tune_adapter  # noqa: E402
from trainables.build import load_data  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data.datasets import absolute_spec  # noqa: E402

MB = 2**20


def workers() -> list[Path]:
    """/proc folders of the Ray worker processes running our trainable (Linux: ``ray::ImplicitFunc``)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith("ray::ImplicitFunc"):
            out.append(proc)
    return out


def memory(proc: Path) -> tuple[int, int]:
    """(PSS, USS) in bytes from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in (proc / "smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def sample(peaks: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        pss = uss = 0
        procs = workers()
        for p in procs:
            try:
                p_pss, p_uss = memory(p)
            except OSError:
                continue
            pss, uss = pss + p_pss, max(uss, p_uss)
        if procs:
            peaks["pss"] = max(peaks.get("pss", 0), pss)
            peaks["uss"] = max(peaks.get("uss", 0), uss)
            peaks["n"] = max(peaks.get("n", 0), len(procs))
        time.sleep(0.25)


def measure(n_trials: int, data, flat: dict, shared: bool = True) -> dict:
    ray.init(num_cpus=n_trials, include_dashboard=False, configure_logging=False, log_to_driver=False)
    peaks: dict = {}
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(peaks, stop), daemon=True)
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            # shared=False: every trial loads the decoded cache itself (a private copy each).
            tune_adapter.trainable(data if shared else None, {"cpu": 1, "gpu": 0}),
            param_space={"sweep.cell": flat, "system.seed": tune.grid_search(list(range(n_trials)))},
            run_config=tune.RunConfig(name="mem", storage_path=storage, verbose=0),
        )
        thread.start()
        tuner.fit()
        stop.set()
        thread.join()
    ray.shutdown()
    return {
        "trials": n_trials,
        "shared": shared,
        "workers_seen": peaks.get("n", 0),
        "total_pss_mb": peaks.get("pss", 0) / MB,
        "max_worker_uss_mb": peaks.get("uss", 0) / MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="imagefolder:../shared/data/cifar10-jpeg")
    args = parser.parse_args()
    flat = (
        TrialConfig.from_flat(
            {
                "method": "supervised",
                "data.dataset": absolute_spec(args.dataset),
                "optim.epochs": 0,
                "model.width": 0.125,
                "eval.probe": False,
            }
        )
        .resolved()
        .to_flat()
    )
    data = load_data(TrialConfig.from_flat(flat).data)
    data_mb = (data.train.images.numel() + data.test.images.numel()) / MB
    one, four = measure(1, data, flat), measure(4, data, flat)
    private = measure(4, data, flat, shared=False)
    print(f"dataset: {data_mb:.0f} MB (uint8 train + test)")
    for r in (one, four, private):
        how = "object store" if r["shared"] else "a private copy each"
        print(
            f"{r['trials']} trial(s), dataset via {how}: total PSS {r['total_pss_mb']:.0f} MB, largest worker USS {r['max_worker_uss_mb']:.0f} MB"
        )
    saved = private["total_pss_mb"] - four["total_pss_mb"]
    print(
        f"4 trials sharing the object-store copy use {saved:.0f} MB less than 4 private copies "
        f"(3 extra copies would be {3 * data_mb:.0f} MB)"
    )
    emit(
        {
            "benchmark": "trial_memory",
            "dataset_mb": data_mb,
            "one": one,
            "four_shared": four,
            "four_private": private,
            "saved_mb": saved,
            "dataset_copies_saved": saved / data_mb,
            "ratio": private["total_pss_mb"] / four["total_pss_mb"],
        }
    )


if __name__ == "__main__":
    main()
