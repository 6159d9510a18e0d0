"""One trial through Ray Tune vs ``run_trial`` called directly: the cost of the adapter.

Ray is started once before timing (a sweep starts its cluster once, not per trial). Both runs
use the same config (about 60 s of CPU work by default) and all cores; Tune's run includes
its actor start-up, the dataset's trip through the object store, per-epoch reports and
checkpoints. Run: ``python benchmarks/tune_overhead.py [--epochs N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402

from benchmarks.common import emit  # noqa: E402
from trainables import tune_adapter  # noqa: E402
from trainables.build import load_data  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.loop import run_trial  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=28, help="28 epochs is about 60 s on 2 CPU cores")
    parser.add_argument("--method", default="supervised")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    flat = (
        TrialConfig.from_flat(
            {
                "method": args.method,
                "optim.epochs": args.epochs,
                "model.width": 0.25,
                "optim.batch_size": 128,
                "eval.eval_every": 2,
            }
        )
        .resolved()
        .to_flat()
    )
    data = load_data(TrialConfig.from_flat(flat).data)

    start = time.perf_counter()
    direct = run_trial(flat, report=lambda m: None, dataset=data)
    direct_s = time.perf_counter() - start
    print(f"direct run_trial: {direct_s:.1f} s (knn {direct['knn_acc']:.2f})", flush=True)

    ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune_adapter.trainable(data, {"cpu": cpus, "gpu": 0}),
            param_space={"sweep.cell": flat},
            run_config=tune.RunConfig(name="overhead", storage_path=storage, verbose=0),
        )
        start = time.perf_counter()
        result = tuner.fit()[0]
        tune_s = time.perf_counter() - start
    ray.shutdown()
    print(f"through Tune:     {tune_s:.1f} s (knn {result.metrics['knn_acc']:.2f})")
    emit(
        {
            "benchmark": "tune_overhead",
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cpus": cpus,
            "epochs": args.epochs,
            "direct_s": direct_s,
            "tune_s": tune_s,
            "ratio": tune_s / direct_s,
            "same_knn": result.metrics["knn_acc"] == direct["knn_acc"],
        }
    )


if __name__ == "__main__":
    main()
