"""Packing: the aggregate training throughput of k trials sharing one device, k = 1, 2, 4 (issue 24).

Each of k processes builds one trial's step as ``benchmarks/train_step.py --study`` builds it (the
gpu preset's method, a mode's levers, with ``--augment`` the trial's GPU augmentation), caps its
GPU memory at 1/k (Ray enforces no GPU memory isolation; a trial with ``--gpus-per-trial 1/k``
must), warms up and waits at a barrier until all k are ready. Then all step for ``--seconds`` and
report their samples/s; the aggregate is the sum. Packing pays where the aggregate of k beats k=1:
small 32 px kernels leave most of a large GPU idle between launches, which other processes' kernels
can fill.

    python3 benchmarks/packing.py --ks 1 2 4 --method moco_v2 --mode levers --seconds 20

On a CPU, small (``--width 0.0625 --batch 8 --image-size 16 --seconds 1``), it only checks the
machinery. The last line is JSON; ``ratio`` is the best k's aggregate over k=1's.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run as a script from anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks.common import emit  # noqa: E402

BARRIER_TIMEOUT_S = 600  # a compiled step can take minutes to build


def child(spec: dict) -> dict:
    """One packed trial's step: build, warm up, meet the others, step for ``seconds``."""
    import torch

    from benchmarks.train_step import study_config, study_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1 / spec["k"], torch.cuda.current_device())
    else:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // spec["k"]))
    cfg = study_config(spec["method"], spec["mode"], device, spec["width"], spec["batch"])
    step = study_step(cfg, device, spec["image_size"], spec["augment"])

    def run(n: int) -> None:
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(spec["warmup"])
    folder = Path(spec["folder"])
    (folder / f"ready{spec['rank']}").touch()
    while not (folder / "go").exists():
        time.sleep(0.01)
    tic, steps = time.perf_counter(), 0
    while time.perf_counter() - tic < spec["seconds"]:
        run(spec["chunk"])
        steps += spec["chunk"]
    elapsed = time.perf_counter() - tic
    return {"rank": spec["rank"], "steps": steps, "seconds": elapsed, "samples_per_s": steps * spec["batch"] / elapsed}


def pack(k: int, spec: dict) -> dict:
    """k children stepping at once; their samples/s and the sum."""
    with tempfile.TemporaryDirectory() as folder:
        # stderr to files: a pipe nobody reads before the barrier would block a chatty child (compile logs)
        logs = [open(Path(folder) / f"stderr{rank}", "w") for rank in range(k)]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            for log in logs
        ]
        for rank, proc in enumerate(procs):
            proc.stdin.write(json.dumps({**spec, "k": k, "rank": rank, "folder": folder}))
            proc.stdin.close()
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while len(list(Path(folder).glob("ready*"))) < k:
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        (Path(folder) / "go").touch()
        outs = [proc.stdout.read() for proc in procs]  # stdin is closed already: no communicate()
        for proc, log in zip(procs, logs, strict=True):
            proc.wait()
            log.close()
        results = []
        for rank, (proc, out) in enumerate(zip(procs, outs, strict=True)):
            if proc.returncode != 0:
                err = (Path(folder) / f"stderr{rank}").read_text().strip().splitlines()
                return {"k": k, "error": err[-1][:300] if err else f"exit {proc.returncode}"}
            results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "k": k,
        "aggregate_samples_per_s": sum(r["samples_per_s"] for r in results),
        "per_process": [r["samples_per_s"] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--method", default="moco_v2")
    parser.add_argument("--mode", default="levers", help="a benchmarks.train_step STUDY_MODES name")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=10, help="steps between device syncs")
    args = parser.parse_args()
    spec = {
        k: getattr(args, k)
        for k in ("method", "mode", "seconds", "width", "batch", "image_size", "augment", "warmup", "chunk")
    }
    rows = []
    print(f"{'k':>2} {'aggregate samples/s':>20} {'vs k=1':>7}  per process")
    for k in args.ks:
        try:
            r = pack(k, spec)
        except KeyboardInterrupt:  # a lease's timeout -s INT: the rows so far still make the JSON line
            rows.append({"k": k, "error": "interrupted"})
            break
        rows.append(r)
        if "error" in r:
            print(f"{k:>2} error: {r['error']}", flush=True)
            continue
        base = rows[0].get("aggregate_samples_per_s")
        vs = f"{r['aggregate_samples_per_s'] / base:6.2f}x" if base else "      -"
        print(
            f"{k:>2} {r['aggregate_samples_per_s']:20.1f} {vs}  {', '.join(f'{x:.1f}' for x in r['per_process'])}",
            flush=True,
        )
    timed = [r for r in rows if "aggregate_samples_per_s" in r]
    one = next((r["aggregate_samples_per_s"] for r in timed if r["k"] == 1), None)
    best = max(timed, key=lambda r: r["aggregate_samples_per_s"], default=None)
    emit(
        {
            "benchmark": "packing",
            **spec,
            "rows": rows,
            "best_k": best["k"] if best else None,
            "ratio": best["aggregate_samples_per_s"] / one if best and one else None,
        }
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
    else:
        main()
