"""Training-step throughput: supervised and MoCo v2 on ResNet-18, by width and numeric setting;
with ``--study``, every method in the study's setting, eager and with the issue-24 levers.

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

``--study`` (issue 24): every registered method with the gpu preset's settings
(``sweeps/configs/paper_table1_gpu.yaml``: full-width ResNet-18 with the study's CIFAR stem, batch
256, each method's heads, queue and optimizer), bf16 autocast and channels_last on CUDA, built by
``trainables.build`` and stepped by ``trainables.step`` exactly as a trial steps, in each of
``STUDY_MODES`` (eager; ``levers``: fused SGD / foreach LARS and foreach EMA; ``compiled``:
``torch.compile``; ``graph``: the whole step as one CUDA graph; ``compiled+graph``). Rows give
samples/s (MoCo & co: pairs; supervised: images), the model FLOPs of one step counted once with
``torch.utils.flop_counter`` (2 per multiply-add; matmuls and convolutions, forward and backward),
the FLOP/s they imply and the fraction of the device's dense bf16 peak. ``--augment`` feeds real
batches through the trial's GPU augmentation (random uint8 images) instead of fixed tensors.
A GPU session (about 4 min with compile for two methods):

    python3 benchmarks/train_step.py --study --modes eager levers compiled graph compiled+graph --budget-s 240

and on a CPU, small: ``--study --width 0.0625 --batch 8 --image-size 16 --steps 2``. The last JSON
line carries ``moco_v2_pairs_per_s`` and ``supervised_images_per_s`` (the best mode's) and
``ratio``, MoCo-v2's best mode over eager.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would be sys.path[0]: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.common import emit, run_times  # noqa: E402
from corruptions import parse  # noqa: E402
from sweeps.options import CONFIG_DIR  # noqa: E402
from trainables import distributed  # noqa: E402
from trainables.build import autocast, build_model, build_optim, native_bf16  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.data.augment import build_augmentation  # noqa: E402
from trainables.data.batches import Pipeline, train_batches  # noqa: E402
from trainables.data.datasets import Split  # noqa: E402
from trainables.methods import METHODS, method_class  # noqa: E402
from trainables.seeding import generators  # noqa: E402
from trainables.step import build_step, check_graph_config  # noqa: E402

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


def make_step(
    method_name: str, width: float, batch: int, device: str, setting: tuple, extra: dict | None = None
) -> Callable[[], None]:
    """One training step of a freshly built trial model, as ``trainables.loop`` runs it.

    ``extra``: flat config overrides (``--set``) for keys of this method; others are skipped.
    """
    precision, channels_last, compile_ = setting
    overrides = {
        "model.width": width,
        "optim.batch_size": batch,
        "system.device": device,
        "system.precision": precision,
        "system.channels_last": channels_last,
        "system.compile": compile_,
    }
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
        "device": device,
        "method": name,
        "width": width,
        "setting": label,
        "steps": len(times),
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
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(CPU_SETTINGS),
        choices=list(CPU_SETTINGS),
        help="CPU settings to time (default: all)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="flat config override for every row, e.g. method.proj_hidden=512 (repeatable)",
    )
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
                    print(
                        f"{device:6} {name:10} {width:5.2f} {label:28} {r['samples_per_s']:10.1f} "
                        f"{r['median_samples_per_s']:8.1f} {r['spread']:6.2f}x",
                        flush=True,
                    )

    moco_q = {
        r["setting"]: r["samples_per_s"]
        for r in rows
        if (r["device"], r["method"], r["width"]) == ("cpu", "moco_v2", 0.25)
    }
    ratio = moco_q["channels_last+bf16"] / moco_q["fp32"] if {"fp32", "channels_last+bf16"} <= set(moco_q) else None
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    native = native_bf16(torch.device("cpu"))  # where false, trials' precision auto runs fp32 on this CPU
    print(
        f"CPU native bf16 (AVX512-BF16 or AMX): {'yes' if native else 'no'}; system.precision=auto runs "
        f"{'channels_last+bf16' if native else 'channels_last (fp32)'} here"
    )
    emit(
        {
            "benchmark": "train_step",
            "batch": args.batch,
            "threads": torch.get_num_threads(),
            "cpu_native_bf16": native,
            "loadavg_before_after": [load_before, os.getloadavg()[0]],
            "cuda": cuda,
            "rows": rows,
            "ratio": ratio,
        }
    )


# ----------------------------------------------------------------------------------------------
# --study (issue 24)

PRESET = CONFIG_DIR / "paper_table1_gpu.yaml"
# Dense bf16 tensor-core peak by device name (TFLOP/s, without 2:4 sparsity); the first match wins.
# H100 SXM5 989.4 (glennklockwood.com/garden/processors/h100, from NVIDIA's Hopper whitepaper); the
# H200 has the same GH100 compute, ~989 (itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html);
# H100 PCIe 756.5, half its 1,513 "with sparsity" (archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html).
# Measured in this workplace (.library/device/KINDS.md): an 8192^3 bf16 matmul at ~798 on the
# H100 and 769-798 on the H200, so ~80% of these is the practical ceiling.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.5), ("H100", 989.4))
LEVERS = {"system.foreach_ema": True}  # plus the optimizer impl by optimizer (study_config)
STUDY_MODES = {  # in the order they are timed: the compiled modes (a compile each) last
    "eager": {},
    "levers": LEVERS,
    "graph": {**LEVERS, "system.cuda_graph": True},
    "compiled": {**LEVERS, "system.compile": True},
    "compiled+graph": {**LEVERS, "system.compile": True, "system.cuda_graph": True},
}
FAST_IMPL = {"sgd": "fused", "lars": "foreach"}  # the optimizer impl the levers use
# A mode sets every lever, whatever the preset turns on (the gpu preset runs compile + graph):
# "eager" is the step with none of them.
NO_LEVERS = {
    "system.compile": False,
    "system.cuda_graph": False,
    "system.foreach_ema": False,
    "system.optimizer_impl": "auto",
}


def mode_settings(mode: str) -> dict:
    """The flat lever keys of a STUDY_MODES mode, all of them set (the optimizer impl: study_config)."""
    return {**NO_LEVERS, **STUDY_MODES[mode]}


def peak_tflops(device_name: str | None) -> float | None:
    """Datasheet dense bf16 TFLOP/s of a CUDA device by name, or None (CPU, unknown GPU)."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if device_name and key in device_name), None)


def study_config(method: str, mode: str, device: torch.device, width: float = 1.0, batch: int = 256) -> TrialConfig:
    """The gpu preset's trial for ``method`` (its ``trial`` keys and ``method_params``), at ``width``
    and ``batch``, with ``mode``'s levers; channels_last on CUDA only (on a CPU the trial loop's
    memory-format canary may refuse it at small widths)."""
    preset = yaml.safe_load(PRESET.read_text())
    flat = {k: v for k, v in preset["trial"].items() if not k.startswith("sweep.")}
    flat.update({k if "." in k else f"method.{k}": v for k, v in (preset["method_params"].get(method) or {}).items()})
    flat.update(
        {
            "method": method,
            "model.width": width,
            "optim.batch_size": batch,
            "system.device": device.type,
            "system.channels_last": device.type == "cuda",
            **mode_settings(mode),
        }
    )
    cfg = TrialConfig.from_flat(flat).resolved()
    if mode != "eager":
        cfg = cfg.replace({"system.optimizer_impl": FAST_IMPL[cfg.optim.optimizer]}).resolved()
    return cfg


def _batches(
    cfg: TrialConfig, device: torch.device, image_size: int, augment: bool
) -> Iterator[tuple[list, torch.Tensor]]:
    """Endless (views, labels): through the trial's augmentation from random uint8 images on the
    device (``augment``), else the same fixed normalised views every step."""
    n_views = method_class(cfg.method).n_views
    g = torch.Generator(device=device).manual_seed(0)
    batch = cfg.optim.batch_size
    if not augment:
        views = [torch.randn(batch, 3, image_size, image_size, device=device, generator=g) for _ in range(n_views)]
        labels = torch.randint(0, 10, (batch,), device=device, generator=g)
        yield from itertools.repeat((views, labels))
    n = 8 * batch
    split = Split(
        torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, device=device, generator=g),
        torch.randint(0, 10, (n,), device=device, generator=g),
        in_memory=True,
    )
    pipeline = Pipeline(parse("ori"), build_augmentation(cfg.data.augmentation), n_views, (0.5,) * 3, (0.25,) * 3)
    gens = generators(0)
    while True:
        yield from train_batches(split, pipeline, batch, gens, device)


def study_step(
    cfg: TrialConfig, device: torch.device, image_size: int = 32, augment: bool = False, as_rank: bool = False
) -> Callable[[], torch.Tensor]:
    """One training step of a freshly built trial model, as ``trainables.loop`` steps it (lr fixed small).

    ``as_rank``: as a data-parallel trial's rank steps it (every BN synchronised, the method inside
    ``DistributedDataParallel``); needs an initialised process group (benchmarks/data_parallel.py)."""
    method = build_model(cfg, 10, device)
    if as_rank:
        distributed.sync_batchnorm(method)
        method = method.to(device)
    method.train()
    optimizer = build_optim(cfg, method)
    step_fn = build_step(cfg, method, optimizer, device, distributed.wrap(method, device) if as_rank else None)
    batches, counter = _batches(cfg, device, image_size, augment), itertools.count()

    def step() -> torch.Tensor:
        views, labels = next(batches)
        if cfg.system.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return step_fn(views, labels, 1e-3, next(counter), 10**6)["loss"]

    return step


def count_flops(cfg: TrialConfig, device: torch.device, image_size: int) -> float:
    """Model FLOPs of one eager training step (forward, backward, key/target passes, optimizer excluded)."""
    step = study_step(cfg.replace({"system.compile": False, "system.cuda_graph": False}), device, image_size)
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def time_steps(
    step: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int, chunk: int
) -> list[float]:
    """Seconds per step of ``repeats`` chunks of ``chunk`` back-to-back steps (one device sync per
    chunk, as the trial loop syncs only at its loss checks), after ``warmup`` steps."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(chunk):
            step()
        sync()
        times.append((time.perf_counter() - tic) / chunk)
    return times


def study_row(method: str, mode: str, device: torch.device, args: argparse.Namespace, flops: dict) -> dict:
    """One (method, mode) row; an error becomes the row's ``error`` (a lease must not lose the rest)."""
    row = {"method": method, "mode": mode}
    try:
        cfg = study_config(method, mode, device, args.width, args.batch)
        if cfg.system.cuda_graph:
            if device.type != "cuda":
                return {**row, "skipped": "needs CUDA"}
            if not method_class(method).graph_safe:
                return {**row, "skipped": "not graph-safe (trainables.methods.base)"}
            check_graph_config(cfg)
        if method not in flops:
            flops[method] = count_flops(cfg, device, args.image_size)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tic = time.perf_counter()
        step = study_step(cfg, device, args.image_size, args.augment)
        step()  # the first step builds (and compiles) what later steps reuse
        setup = time.perf_counter() - tic
        cuda = device.type == "cuda"
        times = time_steps(
            step, device, warmup=args.warmup if cuda else 1, repeats=args.steps, chunk=args.chunk if cuda else 1
        )
    except Exception as err:  # recorded in the row: the run goes on
        return {**row, "error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"}
    best, median = min(times), statistics.median(times)
    row.update(
        samples_per_s=args.batch / best,
        median_samples_per_s=args.batch / median,
        setup_s=setup,
        gflop_per_sample=flops[method] / args.batch / 1e9,
        tflops=flops[method] / best / 1e12,
    )
    if device.type == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def study(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_tflops(name)
    methods = sorted(METHODS) if args.methods == ["all"] else args.methods
    modes = args.modes or (list(STUDY_MODES) if device.type == "cuda" else ["eager", "levers"])
    compile_methods = args.compile_methods or methods
    started, flops, rows = time.perf_counter(), {}, []
    print(
        f"device {name or 'cpu'}; peak bf16 {peak or '-'} TFLOP/s; width {args.width}, batch {args.batch}, "
        f"{args.image_size} px, augment {args.augment}"
    )
    print(
        f"{'method':13} {'mode':15} {'samples/s':>10} {'median':>9} {'GFLOP/smp':>9} {'TFLOP/s':>8} {'%peak':>6} {'setup s':>7}"
    )
    modes = [m for m in STUDY_MODES if m in modes]  # cheap modes for every method first
    try:
        for mode, method in itertools.product(modes, methods):
            if "compiled" in mode and method not in compile_methods:
                continue
            if time.perf_counter() - started > args.budget_s:
                rows.append({"method": method, "mode": mode, "skipped": f"budget {args.budget_s:g} s spent"})
                continue
            r = study_row(method, mode, device, args, flops)
            if peak and "tflops" in r:
                r["fraction_of_peak"] = r["tflops"] / peak
            rows.append(r)
            if "samples_per_s" in r:
                pct = f"{100 * r['fraction_of_peak']:5.1f}%" if "fraction_of_peak" in r else "     -"
                print(
                    f"{method:13} {mode:15} {r['samples_per_s']:10.1f} {r['median_samples_per_s']:9.1f} "
                    f"{r['gflop_per_sample']:9.2f} {r['tflops']:8.2f} {pct:>6} {r['setup_s']:7.1f}",
                    flush=True,
                )
            else:
                print(f"{method:13} {mode:15} {r.get('error') or r.get('skipped')}", flush=True)
    except KeyboardInterrupt:  # a lease's timeout -s INT: the rows so far still make the JSON line
        print("interrupted", flush=True)
        rows.append({"interrupted": True, "method": None, "mode": None})
    emit(study_summary(rows, name, peak, args))


def study_summary(rows: list[dict], device_name: str | None, peak: float | None, args: argparse.Namespace) -> dict:
    """The JSON last line: rows, and each headline method's best mode."""
    out = {
        "benchmark": "train_step_study",
        "device": device_name or "cpu",
        "peak_bf16_tflops": peak,
        "width": args.width,
        "batch": args.batch,
        "image_size": args.image_size,
        "augment": args.augment,
        "torch": torch.__version__,
        "rows": rows,
    }
    for method, key in (("moco_v2", "moco_v2_pairs_per_s"), ("supervised", "supervised_images_per_s")):
        timed = {r["mode"]: r["samples_per_s"] for r in rows if r["method"] == method and "samples_per_s" in r}
        best = max(timed, key=timed.get) if timed else None
        out[key] = timed.get(best)
        out[f"{key}_mode"] = best
        out[f"{key}_eager"] = timed.get("eager")
    eager = out["moco_v2_pairs_per_s_eager"]
    out["ratio"] = out["moco_v2_pairs_per_s"] / eager if eager and out["moco_v2_pairs_per_s"] else None
    return out


def study_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="--study: every method in the study's setting (issue 24)")
    parser.add_argument("--study", action="store_true", required=True)
    parser.add_argument("--methods", nargs="+", default=["all"], help="registered names, or all")
    parser.add_argument(
        "--modes", nargs="+", choices=list(STUDY_MODES), help="default: all on CUDA, eager levers on a CPU"
    )
    parser.add_argument("--compile-methods", nargs="+", help="methods timed in the compiled modes (default: all)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--augment", action="store_true", help="real batches through the trial's GPU augmentation")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps after the first (CUDA)")
    parser.add_argument("--steps", type=int, default=5, help="timed chunks (CUDA) or single steps (CPU)")
    parser.add_argument("--chunk", type=int, default=10, help="steps per timed chunk (CUDA)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no row after this many seconds")
    return parser


if __name__ == "__main__":
    if "--study" in sys.argv:
        study(study_parser().parse_args())
    else:
        main()
