"""Which memory format a trial trains in: channels_last only where it computes the right gradients.

oneDNN's CPU 1x1-convolution backward-weights kernels mishandle channels_last (nhwc) inputs whose
channel count is below the ISA's block (uxlfoundation/oneDNN#6035). On the AVX-512 CPU measured
here (``--matrix``) every fp32 ResNet-18 with the small stem at width <= 1/8 and 64 or 96 px dies
(SIGSEGV, SIGABRT, SIGBUS), and bf16 at 1/8 width, 96 px, batch 8 dies in about one run of three:
an out-of-bounds write need not crash the step that makes it, nor spoil its gradients. Hence two
checks, both on CPU only (CUDA keeps the configured format):

* ``suspect_convs``: the defect's signature, a 1x1 convolution whose input has fewer channels than
  the CPU's vector block (16 on AVX-512, 8 on AVX2). Every crash measured here has one, and since a
  run that survives proves nothing there, such a backbone trains contiguous (NCHW), canary or not.
* ``canary``: for the other shapes, whatever else a CPU, torch (oneDNN) build or thread count may
  do. In a subprocess (a crash is caught): one forward/backward of the trial's backbone at the
  trial's input shape, precision and thread count in NCHW, then ``REPEATS`` in channels_last;
  channels_last is kept only if none dies and their gradients match NCHW's within ``TOLERANCE``,
  all parameters together and each alone (``WORST_FACTOR``). The measurements are cached on disk
  per (CPU, torch/oneDNN, shape, threads) and judged by the current tolerances on every read.

``choose`` applies both for ``run_trial``; a refused channels_last is said loudly and recorded with
the trial's metrics (``memory_format``, ``memory_format_reason``). ``python -m
trainables.memory_format --matrix`` runs both over a grid of shapes, with an fp64 reference.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from trainables.backbone import is_vit
from trainables.config import TrialConfig
from trainables.gradient_probe import CHANNELS_LAST, Shape, run_jobs

CONTIGUOUS = "contiguous"
# channels_last passes if its gradients differ from NCHW's (same precision) by at most TOLERANCE,
# relative: in the --matrix table on the AVX-512 EPYC, every step that ran was within 3.8e-6 (fp32)
# and 6.3e-3 (bf16, where both formats are 2e-3..3e-2 off fp64) of NCHW.
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}
# ... and no single parameter's gradient may differ by more than WORST_FACTOR x TOLERANCE. The
# aggregate alone hides the layer class of oneDNN#6035: a strided 1x1 downsample convolution holds
# 1e-2..1e-1 of the gradient norm, so its gradient could be ~50% wrong within the bf16 tolerance.
# Measured on the AVX-512 EPYC (ResNet-18, widths 1/16..1, 32..96 px, batch 8..64, both stems,
# 1 and 2 threads; 136 shapes), a correct channels_last step's worst parameter is within 2.8e-5
# (fp32) and 1.3e-2 (bf16, mostly the stem's conv1) of NCHW: 3x keeps 10x and 4.6x of headroom and
# still catches one parameter 6% off (bf16; 0.03% in fp32). A downsample gradient 1.5x too large
# (error 0.5) then fails at every shape, where the aggregate was as low as 3e-3. ResNet-50 on the same
# CPU (`--matrix --backbone resnet50`: widths 1/16..1, 32..96 px, batch 8 and 32, both stems, 1
# thread; 70 shapes): worst parameter 3e-5 (fp32) and 3e-2 (bf16, batch-norm weights): 2x of
# headroom in bf16; a correct step beyond it would only train NCHW (slower, never wrong).
WORST_FACTOR = 3
REPEATS = 3  # channels_last steps per canary: an out-of-bounds write need not crash the first one


# ---------------------------------------------------------------- the trial's choice


def choose(cfg: TrialConfig, device: torch.device, image_size: tuple[int, int], ranks: int = 1) -> dict[str, str]:
    """The memory format a trial trains in and why, as reported with its metrics.

    The canary runs the steps each process trains: views of ``data.input_size``, else of
    ``data.crop_size``, else of the stored side, in its shard (``optim.batch_size / ranks``) of the
    global batch and, with ``eval.finetune``, in batches of ``eval.finetune_batch_size``: oneDNN
    picks its kernels by shape, so another shape's verdict says nothing.

    Args:
        cfg: the trial's config, ``system.precision`` resolved (fp32 | bf16).
        device: where it trains.
        image_size: (H, W) of the stored images.
        ranks: data-parallel processes sharing each global batch.

    Returns:
        ``{"memory_format": "channels_last" | "contiguous", "memory_format_reason": one line}``.
        channels_last needs ``system.channels_last`` and, on CPU, no ``suspect_convs`` and a passed canary.
    """
    if not cfg.system.channels_last:
        return _choice(False, "system.channels_last is false")
    if device.type != "cpu":
        return _choice(True, f"on {device.type} (the canary guards CPUs only)")
    if not cfg.optim.train_backbone and not cfg.eval.finetune:  # eval.finetune trains a copy of it
        return _choice(True, "frozen backbone: no convolution gradients")
    if is_vit(cfg.model.backbone):
        # Its one convolution (the patch embedding) has a stride equal to its kernel; the canary's
        # network is a ResNet. Nothing to gain, nothing measured: NCHW.
        return _choice(False, "a ViT: only its patch embedding is a convolution (channels_last gains nothing on CPU)")
    side = cfg.data.input_size or cfg.data.crop_size
    # The batches whose convolutions get gradients: each rank's training shard, and (one process)
    # eval.finetune's batches, the only ones where the backbone is frozen.
    batches = [cfg.optim.batch_size // ranks] if cfg.optim.train_backbone else []
    batches += [cfg.eval.finetune_batch_size] if cfg.eval.finetune else []
    result = {"ok": True, "reason": ""}
    for batch in dict.fromkeys(batches):
        shape = Shape(
            cfg.model.backbone,
            float(cfg.model.width),
            cfg.model.small_stem,
            (side, side) if side else tuple(image_size),
            batch,
            cfg.system.precision,
            torch.get_num_threads(),
            cfg.model.stem_padding,
        )
        suspects = suspect_convs(shape)
        result = {"ok": False, "reason": _suspect_reason(suspects)} if suspects else canary(shape)
        if not result["ok"]:
            break
    if not result["ok"]:
        print(
            f"WARNING: system.channels_last is on, but {result['reason']}; this trial trains in the contiguous "
            "(NCHW) format instead. `python -m trainables.memory_format --matrix` shows the shapes hit here.",
            file=sys.stderr,
            flush=True,
        )
    return _choice(result["ok"], result["reason"])


def suspect_convs(shape: Shape) -> list[tuple[str, int]]:
    """(name, input channels) of the backbone's 1x1 convolutions with fewer input channels than this
    CPU's vector block: where oneDNN#6035 writes out of bounds in channels_last. [] off x86."""
    from trainables.backbone import build_backbone

    block = channel_block()
    if not block:
        return []
    net, _ = build_backbone(
        shape.backbone, small_stem=shape.small_stem, width=shape.width, stem_padding=shape.stem_padding
    )
    return [
        (name, m.in_channels)
        for name, m in net.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.in_channels < block
    ]


def channel_block() -> int:
    """Channels per vector register in oneDNN's fp32 kernels: 16 (AVX-512), 8 (AVX2), 0 (other)."""
    flags = set()
    with contextlib.suppress(OSError, AttributeError):
        flags = set(re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    capability = torch.backends.cpu.get_cpu_capability()
    if "avx512f" in flags or (not flags and capability.startswith("AVX512")):
        return 16
    return 8 if "avx2" in flags or (not flags and capability == "AVX2") else 0


def _suspect_reason(suspects: list[tuple[str, int]]) -> str:
    name, channels = suspects[0]
    more = f" (and {len(suspects) - 1} more)" if len(suspects) > 1 else ""
    return (
        f"1x1 convolution {name}{more} has {channels} input channels, below this CPU's {channel_block()}-channel "
        "block, where oneDNN's channels_last backward writes out of bounds (uxlfoundation/oneDNN#6035)"
    )


def _choice(channels_last: bool, reason: str) -> dict[str, str]:
    return {"memory_format": CHANNELS_LAST if channels_last else CONTIGUOUS, "memory_format_reason": reason}


def canary(shape: Shape, folder: Path | None = None) -> dict[str, Any]:
    """Run (or read from the cache) the canary for ``shape`` on this machine: one NCHW step, then
    ``REPEATS`` channels_last steps, in a forked child of a fresh subprocess.

    Returns:
        ``ok`` (channels_last may be used), ``reason`` (one line), ``steps`` (``run_jobs`` results:
        NCHW first), ``seconds`` (the canary's own time), ``cached``, and the cache key.
    """
    folder = folder or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = {"machine": machine(), "shape": dataclasses.asdict(shape), "repeats": REPEATS}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{shape.short().replace(' ', '_')}_{digest}.json"
    with _locked(path.with_suffix(".lock")):  # concurrent trials of one shape: one canary, the others wait
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            cached = json.loads(path.read_text())
            # The key holds the measurements' conditions, not the tolerances: judge them by today's.
            ok, reason = verdict(cached["steps"], shape.precision)
            return {**cached, "ok": ok, "reason": reason, "cached": True}
        tic = time.perf_counter()
        steps = next(run_jobs([(shape, ("nchw",) + (CHANNELS_LAST,) * REPEATS)], reference=False))
        ok, reason = verdict(steps, shape.precision)
        result = {"ok": ok, "reason": reason, "steps": steps, "seconds": round(time.perf_counter() - tic, 2), **key}
        if "error" not in steps[0]:  # a canary that could not run at all is no verdict on the CPU: not cached
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(path)
    return {**result, "cached": False}


def verdict(steps: list[dict[str, Any]], precision: str) -> tuple[bool, str]:
    """(channels_last is fine, why) from one NCHW step and the channels_last steps after it."""
    nchw, cl = steps[0], steps[1:]
    if "error" in nchw:
        return False, f"the memory-format canary could not run its NCHW step ({nchw['error']})"
    if died := [s["error"] for s in cl if "error" in s]:
        return False, f"a channels_last step died in the canary ({died[0]})"
    worst = max(cl, key=lambda s: s["diff"])
    if worst["diff"] > TOLERANCE[precision]:
        return False, (
            f"channels_last gradients differ from NCHW's by {worst['diff']:.1e} in the canary "
            f"(tolerance {TOLERANCE[precision]:.0e}; worst {worst['diff_worst']})"
        )
    one = max(cl, key=lambda s: s["diff_worst_err"])
    if one["diff_worst_err"] > WORST_FACTOR * TOLERANCE[precision]:
        return False, (
            f"the channels_last gradient of {one['diff_worst']} differs from NCHW's by {one['diff_worst_err']:.1e} "
            f"in the canary (tolerance per parameter {WORST_FACTOR * TOLERANCE[precision]:.0e}; all parameters "
            f"together {worst['diff']:.1e})"
        )
    return True, (
        f"canary passed: {len(cl)} channels_last steps within {worst['diff']:.1e} of NCHW, every parameter within "
        f"{one['diff_worst_err']:.1e} ({precision})"
    )


def cache_dir() -> Path:
    """``$SBL_MEMORY_FORMAT_CACHE``, else ``memory_format/`` in ``$SBL_CACHE_DIR`` or ~/.cache/spatial-bias-lab."""
    if os.environ.get("SBL_MEMORY_FORMAT_CACHE"):
        return Path(os.environ["SBL_MEMORY_FORMAT_CACHE"])
    return Path(os.environ.get("SBL_CACHE_DIR", Path.home() / ".cache" / "spatial-bias-lab")) / "memory_format"


def machine() -> dict[str, str]:
    """What the kernels oneDNN picks depend on besides the shape: CPU model and flags, torch, oneDNN."""
    found = re.search(r"oneDNN v[\w.]+|MKL-DNN v[\w.]+", torch.__config__.show())
    info = {
        "cpu": cpu_summary(),
        "torch": torch.__version__,
        "onednn": found.group(0) if found else "unknown",
        **{
            k: v
            for k, v in os.environ.items()
            if k in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
        },
    }
    with contextlib.suppress(OSError):
        flags = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        info["cpu_flags"] = (
            hashlib.sha256(" ".join(sorted(flags.group(1).split())).encode()).hexdigest()[:16] if flags else ""
        )
    return info


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the matrix CLI


def matrix_shapes(threads: int, backbone: str = "resnet18") -> list[Shape]:
    """Widths 1/16..1 x 32/64/96 px x batch 8, 32 (and 64 at 32 px) x both stems x fp32/bf16.

    Ordered so that fp32 and bf16 of one geometry follow each other (one fp64 reference for both).
    """
    shapes = []
    for small_stem in (True, False):
        for px, batches in ((32, (8, 32, 64)), (64, (8, 32)), (96, (8, 32))):
            for width in (0.0625, 0.125, 0.25, 0.5, 1.0):
                for batch in batches:
                    shapes += [
                        Shape(backbone, width, small_stem, (px, px), batch, p, threads) for p in ("fp32", "bf16")
                    ]
    return shapes


def print_matrix(shapes: list[Shape], out) -> int:
    """Both checks for every shape, plus an fp64 reference; one row each. Returns how many fail."""
    print(
        f"# {cpu_summary()}; torch {torch.__version__}; {shapes[0].threads} thread(s). err: |g - g_fp64| / |g_fp64| "
        f"over all parameters; cl-nchw: |g_cl - g_nchw| / |g_nchw|, worst of {REPEATS} channels_last steps; "
        f"1x1<{channel_block()}: input channels of a suspect 1x1 convolution",
        file=out,
    )
    print(
        f"{'shape':<46} {'nchw err':>9} {'cl err':>9} {'cl-nchw':>9}  {'worst parameter (cl-nchw)':<34} "
        f"{'1x1<' + str(channel_block()):>7}  verdict",
        file=out,
        flush=True,
    )
    failing = 0
    jobs = [(s, ("nchw",) + (CHANNELS_LAST,) * REPEATS) for s in shapes]
    for shape, steps in zip(shapes, run_jobs(jobs), strict=True):
        ok, _ = verdict(steps, shape.precision)
        suspects = suspect_convs(shape)
        nchw, cl = steps[0], steps[1:]
        died = next((s["error"] for s in cl if "error" in s), None)
        worst = None if died else max(cl, key=lambda s: s["diff"])
        cells = [
            nchw.get("error") or f"{nchw['rel_err']:.1e}",
            died or f"{worst['rel_err']:.1e}",
            "" if died else f"{worst['diff']:.1e}",
            "" if died else f"{worst['diff_worst']} {worst['diff_worst_err']:.0e}",
            ",".join(str(c) for _, c in suspects) or "-",
        ]
        failing += not ok or bool(suspects)
        label = "CRASH" if died else "WRONG" if not ok else "SUSPECT" if suspects else "ok"
        seconds = sum(s.get("seconds", 0) for s in steps)
        print(
            f"{shape.short():<46} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9}  {cells[3]:<34} {cells[4]:>7}  "
            f"{label} ({seconds:.0f} s)",
            file=out,
            flush=True,
        )
    return failing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainables.memory_format", description=__doc__.split("\n\n")[0])
    p.add_argument("--matrix", action="store_true", help="measure NCHW vs channels_last over a grid of shapes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per measurement (a trial uses its CPU count)")
    p.add_argument("--only", default=None, help="keep the matrix rows whose description contains this text")
    p.add_argument("--backbone", default="resnet18", help="timm ResNet of the matrix (default resnet18), e.g. resnet50")
    args = p.parse_args(argv)
    if not args.matrix:
        p.print_help()
        return 2
    shapes = [s for s in matrix_shapes(args.threads, args.backbone) if args.only is None or args.only in s.short()]
    failing = print_matrix(shapes, sys.stdout)
    print(f"{failing} of {len(shapes)} shapes would train in the contiguous format on this machine", flush=True)
    return 0


def cpu_summary() -> str:
    """CPU model and torch's vector ISA, e.g. ``AMD EPYC 9R14 (AVX512)``."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1).strip() if found else model
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


if __name__ == "__main__":
    sys.exit(main())
