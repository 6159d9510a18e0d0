"""Training-step throughput: supervised and MoCo v2 on ResNet-18, by width and numeric setting.

One step is what the trial loop does per batch: forward (both views, both encoders for MoCo),
backward, optimizer step and ``on_after_step`` (MoCo's momentum update). Inputs are random
normalised 32 px batches already on the device, so data loading is not measured. Models and
optimizers come from ``trainables.build`` with a TrialConfig (MoCo queue 4096, split BN), so
the settings match real trials. CPU settings: fp32; channels_last; channels_last + bf16
autocast. On CUDA (when present): bf16 + channels_last, and with ``--compile`` also
``torch.compile``.

Run: ``python benchmarks/train_step.py [--widths 1.0 0.25] [--batch 256] [--steps 4]`` (about
2.5 min on 2 idle cores; full width on CPU times a single step after one warm-up step). The last
line is JSON; ``ratio`` = channels_last+bf16 over fp32 samples/s for MoCo v2 at quarter width on
CPU (0.11 measured on an AVX2-only AMD EPYC, where oneDNN emulates bf16; ``cpu_native_bf16`` says
whether this CPU has AVX512-BF16 or AMX, and trials' ``system.precision: auto`` follows it). Rows
are the best step; ``spread`` (slowest / fastest step) and the load average flag runs disturbed by
other processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.common import emit, run_times  # noqa: E402
from trainables.build import autocast, build_model, build_optim, native_bf16  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402

# name -> (system.precision, system.channels_last, system.compile)
CPU_SETTINGS = {
    "fp32": ("fp32", False, False),
    "channels_last": ("fp32", True, False),
    "channels_last+bf16": ("bf16", True, False),
}
CUDA_SETTINGS = {
    "channels_last+bf16": ("bf16", True, False),
    "channels_last+bf16+compile": ("bf16", True, True),
}


def make_step(method_name: str, width: float, batch: int, device: str, setting: tuple,
              extra: dict | None = None) -> Callable[[], None]:
    """One training step of a freshly built trial model, as ``trainables.loop`` runs it.

    ``extra``: flat config overrides (``--set``) for keys of this method; others are skipped.
    """
    precision, channels_last, compile_ = setting
    overrides = {"model.width": width, "optim.batch_size": batch, "system.device": device,
                 "system.precision": precision, "system.channels_last": channels_last, "system.compile": compile_}
    if method_name == "moco_v2":
        overrides["method.queue_size"] = 4096
    known = TrialConfig(method=method_name).to_flat()
    overrides.update({k: v for k, v in (extra or {}).items() if k in known})
    cfg = TrialConfig(method=method_name).replace(overrides).resolved()
    dev = torch.device(device)
    method = build_model(cfg, num_classes=10, device=dev).train()
    optimizer = build_optim(cfg, method)
    g = torch.Generator(device=dev).manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    views = [
        torch.randn(batch, 3, 32, 32, device=dev, generator=g).contiguous(memory_format=memory)
        for _ in range(method.n_views)
    ]
    labels = torch.randint(0, 10, (batch,), device=dev, generator=g)
    precision_ctx = autocast(cfg, dev)

    def step() -> None:
        with precision_ctx:
            loss = method.training_step(views, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.on_after_step(0.5)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    return step


def step_times(step: Callable[[], None], warmup: int, steps: int) -> list[float]:
    """Wall seconds of ``steps`` single steps after ``warmup`` untimed ones."""
    return run_times(step, repeats=steps, warmup=warmup)


def measure(device: str, name: str, width: float, label: str, args: argparse.Namespace) -> dict:
    """One table row: best and median samples/s over the timed steps, and their spread."""
    setting = (CUDA_SETTINGS if device == "cuda" else CPU_SETTINGS)[label]
    cheap = width < 1.0 or device == "cuda"
    warmup = (10 if setting[2] else 3) if device == "cuda" else (2 if cheap else 1)
    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    step = make_step(name, width, args.batch, device, setting, extra)
    times = step_times(step, warmup, args.steps if cheap else args.full_steps)
    return {
        "device": device, "method": name, "width": width, "setting": label, "steps": len(times),
        "samples_per_s": args.batch / min(times),
        "median_samples_per_s": args.batch / statistics.median(times),
        "spread": max(times) / min(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["supervised", "moco_v2"])
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0, 0.25])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (CUDA; CPU below width 1)")
    parser.add_argument("--full-steps", type=int, default=1, help="timed steps, CPU, width 1 (5-20 s each)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on CUDA")
    parser.add_argument("--settings", nargs="+", default=list(CPU_SETTINGS), choices=list(CPU_SETTINGS),
                        help="CPU settings to time (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="flat config override for every row, e.g. method.proj_hidden=512 (repeatable)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other processes on the cores make every row erratic
    targets = [("cpu", list(args.settings))]
    if torch.cuda.is_available():
        targets.append(("cuda", [k for k, v in CUDA_SETTINGS.items() if args.compile or not v[2]]))
    rows = []
    print(f"{'device':6} {'method':10} {'width':>5} {'setting':28} {'samples/s':>10} {'median':>8} {'spread':>7}")
    for device, labels in targets:
        for width in args.widths:
            for name in args.methods:
                for label in labels:
                    r = measure(device, name, width, label, args)
                    rows.append(r)
                    print(f"{device:6} {name:10} {width:5.2f} {label:28} {r['samples_per_s']:10.1f} "
                          f"{r['median_samples_per_s']:8.1f} {r['spread']:6.2f}x", flush=True)

    moco_q = {r["setting"]: r["samples_per_s"] for r in rows
              if (r["device"], r["method"], r["width"]) == ("cpu", "moco_v2", 0.25)}
    ratio = moco_q["channels_last+bf16"] / moco_q["fp32"] if {"fp32", "channels_last+bf16"} <= set(moco_q) else None
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    native = native_bf16(torch.device("cpu"))  # where false, trials' precision auto runs fp32 on this CPU
    print(f"CPU native bf16 (AVX512-BF16 or AMX): {'yes' if native else 'no'}; system.precision=auto runs "
          f"{'channels_last+bf16' if native else 'channels_last (fp32)'} here")
    emit({"benchmark": "train_step", "batch": args.batch, "threads": torch.get_num_threads(), "cpu_native_bf16": native,
          "loadavg_before_after": [load_before, os.getloadavg()[0]], "cuda": cuda, "rows": rows,
          "ratio": ratio})


if __name__ == "__main__":
    main()
