"""A trial whose worker dies by a signal is reported as such, with the last lines of its log."""

from __future__ import annotations

import os

import pytest
import ray
import yaml

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.conftest import REPO
from tests.sweeps import crashing_method
from tests.sweeps.conftest import TINY_YAML, argv, final_metrics, runs
from trainables.methods import METHODS

pytestmark = pytest.mark.slow


@pytest.fixture
def segfault_method(monkeypatch):
    """``segfault_for_tests`` registered here and, through Ray's setup hook, in every worker."""
    crashing_method.register()
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )  # `tests` there
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": crashing_method.register},
    )  # the sweep joins this instance
    yield crashing_method.NAME
    ray.shutdown()
    METHODS.pop(crashing_method.NAME)


def test_crash__worker_killed_by_sigsegv_is_reported_with_its_log(storage, tmp_path, segfault_method, capsys):
    config = {
        **yaml.safe_load(open(TINY_YAML)),
        "methods": ["supervised", segfault_method],
        "families": ["glo"],
        "grids": [1],
        "max_failures": 0,
    }  # glo_1 is the identity: only ori, one trial per method
    (tmp_path / "crash.yaml").write_text(yaml.safe_dump(config))
    assert main(GRID, argv(storage, "--experiment", "crash", "--config", str(tmp_path / "crash.yaml"), epochs=1)) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if f"{segfault_method}" in line and "FAILED" in line]
    assert len(failed) == 1, out[-3000:]
    assert "crashed: SIGSEGV in the worker; last lines of its log:" in failed[0], out[-3000:]
    report = out[out.index("crashed: SIGSEGV") :]
    assert "Fatal Python error: Segmentation fault" in report
    assert "crashing_method.py" in report and "training_step" in report  # the frame that crashed
    assert "actor died" not in failed[0].lower()

    client, _, children = runs(storage, "crash")
    by_method = {r.data.tags["method"]: r for r in children}
    crashed, finished = by_method[segfault_method], by_method["supervised"]
    assert crashed.info.status == "FAILED"
    assert crashed.data.tags["error"].startswith("SIGSEGV in the worker; last lines of its log:")
    # the healthy trial's memory format is logged: progress line (once), MLflow tag, final metrics
    fmt = finished.data.tags["memory_format"]
    assert fmt in ("channels_last", "contiguous") and finished.data.tags["memory_format_reason"]
    assert out.count(f"[{fmt}: ") == 1, out[-3000:]
    assert final_metrics(client, finished, tmp_path / "f")["memory_format"] == fmt
