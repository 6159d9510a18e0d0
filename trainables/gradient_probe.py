"""One training step's gradients of a backbone in a memory format, measured in isolated processes.

``run_jobs`` starts a worker (``python -m trainables.gradient_probe``) that has imported torch and
runs nothing itself: every measurement happens in a child forked from it, so an out-of-bounds
write of one cannot corrupt the next, and a step that kills its process (a signal, an exit, a
hang) is reported as such instead of taking the caller down. ``trainables.memory_format`` builds
the canary and the ``--matrix`` table on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHANNELS_LAST = "channels_last"
TIMEOUT_S = 600  # per step: a hung kernel (oneDNN#6035 reports hangs too) counts as a failure


@dataclasses.dataclass(frozen=True)
class Shape:
    """What decides which oneDNN kernels a training step runs (weights do not)."""

    backbone: str = "resnet18"
    width: float = 0.125
    small_stem: bool = True
    image_size: tuple[int, int] = (32, 32)
    batch: int = 32
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    threads: int = 1
    stem_padding: int = 1  # of the small stem

    def short(self) -> str:
        h, w = self.image_size
        stem = ("small" if self.stem_padding == 1 else f"small p{self.stem_padding}") if self.small_stem else "default"
        return f"{self.backbone} w{self.width:g} {h}x{w} b{self.batch} {stem} stem {self.precision} {self.threads}t"


def gradients(shape: Shape, fmt: str, precision: str) -> dict[str, torch.Tensor]:
    """One forward/backward's parameter gradients (float64) of ``shape``'s backbone.

    The convolutions, where the bug is, see the trial's shapes and memory format; the rest is
    made well-conditioned, so that a wrong kernel stands out of rounding: ReLU and max-pooling
    become SiLU and average pooling, BatchNorm uses its running statistics and the loss is a fixed
    random projection of the features. With ReLU's kinks a one-ulp difference flips activation
    masks, and even NCHW fp32 (PyTorch's non-oneDNN convolution too) lands 1e-4..1e-2 off fp64
    at some shapes; smoothed, every correct variant is within ~5e-6.

    Args:
        fmt: ``nchw`` or ``channels_last``.
        precision: ``fp64``, ``fp32`` or ``bf16`` (autocast).

    Returns:
        parameter name -> flattened float64 gradient; every variant starts from the same weights and batch.
    """
    from trainables.backbone import build_backbone

    torch.manual_seed(0)
    # zero_init_last=False: timm's zero-init would zero most conv gradients of the first step
    net, dim = build_backbone(
        shape.backbone,
        small_stem=shape.small_stem,
        width=shape.width,
        zero_init_last=False,
        stem_padding=shape.stem_padding,
    )
    _smooth(net).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.batch, 3, *shape.image_size, generator=g)
    direction = torch.randn(shape.batch, dim, generator=g, dtype=torch.float64) / shape.batch
    if precision == "fp64":
        net, x = net.double(), x.double()
    if fmt == CHANNELS_LAST:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with amp:
        features = net(x)
    (features.double() * direction).sum().backward()
    return {name: p.grad.double().flatten() for name, p in net.named_parameters()}


def _smooth(module: nn.Module) -> nn.Module:
    """ReLU -> SiLU and MaxPool2d -> AvgPool2d (same output shapes), in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.SiLU())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            _smooth(child)
    return module


def compare(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Relative error over all parameters and the worst single parameter's."""
    diff = torch.cat([grads[k] - ref[k] for k in ref])
    total = (diff.norm() / torch.cat(list(ref.values())).norm()).item()
    per = {k: ((grads[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref if ref[k].norm() > 0}
    worst = max(per, key=per.get)
    return {"rel_err": total, "worst": worst, "worst_err": per[worst]}


def _worker(timeout_s: float) -> None:
    """Child process: reads jobs ``[{"shape": ..., "fmts": [...], "reference": bool}]`` (JSON) from
    stdin and prints one JSON list per job, a result per format.

    Every computation runs in a process forked from this one, which has imported torch but run
    nothing: an out-of-bounds write cannot corrupt the next job, and a crash is reported as such.
    Consecutive jobs of one geometry (fp32, then bf16) share the fp64 reference, kept in a file.
    """
    from trainables import backbone  # noqa: F401  (imported once, before forking)

    with tempfile.TemporaryDirectory() as folder:
        ref_path, ref_of, ref_error = Path(folder) / "ref.pt", None, None
        for job in json.loads(sys.stdin.read()):
            shape = Shape(**{**job["shape"], "image_size": tuple(job["shape"]["image_size"])})
            if job["reference"] and ref_of != (geometry := dataclasses.replace(shape, precision="fp64")):
                ref_of = geometry
                ref_error = _in_child(lambda _fd, s=shape: _save_reference(s, ref_path), timeout_s)[1]
            results, error = [], f"fp64 reference: {ref_error}"
            if not (job["reference"] and ref_error):
                ref = ref_path if job["reference"] else None
                results, error = _in_child(lambda fd, s=shape, f=job["fmts"], r=ref: _measure(s, f, r, fd), timeout_s)
            results += [{"error": error or "no result"}] * (len(job["fmts"]) - len(results))
            print(json.dumps(results), flush=True)


def _save_reference(shape: Shape, path: Path) -> None:
    torch.set_num_threads(shape.threads)
    torch.save(gradients(shape, "nchw", "fp64"), path)


def _in_child(work, timeout_s: float) -> tuple[list[dict], str | None]:
    """Run ``work(fd)`` in a forked child that writes JSON lines to ``fd``; returns (results,
    error): error is ``SIGSEGV``, ``exit 1``, ``timeout after ...`` or None."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash here is expected: no core file,
            faulthandler.disable()  # and no traceback dump
            work(write)
            code = 0
        except BaseException:  # the child must never return into the parent's loop
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    lines, expired = _read_within(read, timeout_s)
    if expired:
        os.kill(pid, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    error = f"timeout after {timeout_s:.0f} s" if expired else _exit_text(os.waitstatus_to_exitcode(status))
    return [json.loads(line) for line in lines], error


def _measure(shape: Shape, fmts: list[str], ref_path: Path | None, fd: int) -> None:
    """One JSON line per format, written as each finishes (a crash keeps the earlier ones): its
    error vs the fp64 reference (``rel_err``, ``worst``, ``worst_err``; with a reference) and,
    after the first format, its difference from the first's gradients (``diff``, ``diff_worst``)."""
    torch.set_num_threads(shape.threads)
    ref = torch.load(ref_path) if ref_path else None
    first = None
    for fmt in fmts:
        tic = time.perf_counter()
        grads = gradients(shape, fmt, shape.precision)
        result = compare(grads, ref) if ref else {}
        if first is None:
            first = grads
        else:
            diff = compare(grads, first)
            result.update(diff=diff["rel_err"], diff_worst=diff["worst"], diff_worst_err=diff["worst_err"])
        os.write(fd, (json.dumps({**result, "seconds": time.perf_counter() - tic}) + "\n").encode())


def _read_within(fd: int, timeout_s: float) -> tuple[list[str], bool]:
    """Lines from ``fd`` until EOF; (lines, True) if one step (line) takes longer than ``timeout_s``."""
    data, deadline = b"", time.monotonic() + timeout_s
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([pipe], [], [], left)[0]:
                chunk = pipe.read(65536)
                if not chunk:
                    return data.decode().splitlines(), False
                data += chunk
                deadline = time.monotonic() + timeout_s
    return data.decode().splitlines(), True


def run_jobs(
    jobs: list[tuple[Shape, tuple[str, ...]]], reference: bool = True, timeout_s: float = TIMEOUT_S
) -> Iterator[list[dict[str, Any]]]:
    """Run each ``(shape, formats)`` in a subprocess; yields per job, in order, one dict per format
    (``_measure``'s, with the fp64 reference if ``reference``), or ``{"error": "SIGSEGV"}`` (or
    ``SIGABRT``, ``exit 1``, ``timeout after 600 s``) for a format whose step died.
    """
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": str(jobs[0][0].threads) if jobs else "1",
    }
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainables.gradient_probe", str(timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        proc.stdin.write(
            json.dumps([{"shape": dataclasses.asdict(s), "fmts": list(f), "reference": reference} for s, f in jobs])
        )
        proc.stdin.close()
        done = 0
        for line in proc.stdout:
            if line.startswith("["):
                done += 1
                yield json.loads(line)
        rc = proc.wait()
        if done < len(jobs):  # the worker itself failed (cannot import, ...): say why, for every job left
            err.seek(0)
            error = f"canary process {_exit_text(rc) or 'ended'}: {' | '.join(err.read().strip().splitlines()[-2:])}"
            for _shape, fmts in jobs[done:]:
                yield [{"error": error}] * len(fmts)


def _exit_text(rc: int) -> str | None:
    if rc == 0:
        return None
    if rc < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-rc).name
        return f"signal {-rc}"
    return f"exit {rc}"


if __name__ == "__main__":  # the worker: python -m trainables.gradient_probe TIMEOUT_S < jobs.json
    _worker(float(sys.argv[1]))
