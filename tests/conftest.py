"""Shared fixtures and the `gpu` marker policy: gpu tests run only where CUDA exists."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CIFAR10_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg"


RAY_TESTS = REPO / "tests" / "sweeps"


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests without CUDA; keep the tests that start Ray in one xdist group.

    Under ``-n 2 --dist loadgroup`` (setup.cfg) one worker runs the Ray tests one after another (each
    starts its own local Ray, and ``--address auto`` ones must find only their own) while the other
    runs the rest: the Ray tests mostly wait (cluster and worker start-up), so the two overlap."""
    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if skip is not None and item.get_closest_marker("gpu") is not None:  # the marker, not a parameter id
            item.add_marker(skip)
        if RAY_TESTS in item.path.parents or "smoke_sweep" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


def pytest_configure(config):
    """An xdist worker computes on one thread (and so do the processes it starts): two workers at two
    OpenMP threads each on two cores spin at each other's barriers (a 2 s test took 56 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def memory_format_cache(tmp_path_factory):
    """One memory-format canary cache per test session (``trainables.memory_format``): each trial
    shape pays its subprocess once, and the user's cache is never written. Ray workers inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBL_MEMORY_FORMAT_CACHE", str(tmp_path_factory.mktemp("memory_format")))
        yield


@pytest.fixture(scope="session")
def cifar10_jpeg() -> Path:
    """The real CIFAR-10 ImageFolder beside the checkout (``../shared``, present in CI); a clone
    without it skips the tests that read it, saying why."""
    if not (CIFAR10_JPEG / "train").is_dir():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_JPEG} (../shared/data/cifar10-jpeg beside the checkout)")
    return CIFAR10_JPEG


def devices() -> list[str]:
    """CPU always; CUDA too where present (the same test then checks both)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def images_u8() -> torch.Tensor:
    """(6, 3, 32, 32) uint8 with every pixel distinct enough to track permutations."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)


@dataclasses.dataclass(frozen=True)
class SmokeSweep:
    """A finished ``grid_patch_sizes.py --smoke-test`` sweep: where it is and what it printed."""

    storage: Path
    experiment: str
    out: str
    code: int


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    """One real smoke sweep (Ray Tune + MLflow sqlite; supervised and moco_v2 on ori, glo_4 and loc_4,
    2 epochs of tiny trials, plus the untrained reference of each corruption: 9 trials) shared by the tests that
    read its records (the sweep's own and analysis's end to end), so the suite pays for it once."""
    import ray

    from sweeps.grid_patch_sizes import SWEEP
    from sweeps.launch import main
    from tests.sweeps.conftest import argv as sweep_argv

    root = tmp_path_factory.mktemp("smoke")
    storage, out = root / "runs", io.StringIO()
    argv = sweep_argv(storage, "--experiment", "smoke", "--methods", "supervised", "moco_v2", report=True)
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("SBL_CACHE_DIR", str(root / "cache"))
        try:
            code = main(SWEEP, [*argv, "--smoke-test"])
        finally:
            ray.shutdown()
    return SmokeSweep(storage, "smoke", out.getvalue(), code)
