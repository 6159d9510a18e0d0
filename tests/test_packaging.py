"""The package as a user installs it: a built wheel ships the presets and its console scripts run
from outside the checkout (an installed wheel has no ``sweeps/configs`` unless declared)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.name for p in (ROOT / "sweeps" / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, target folder it is installed in), built without network (no build isolation)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(ROOT),
        ],
        check=True,
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("spatial_bias_lab-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"), str(wheel)],
        check=True,
        cwd=tmp,
    )
    return wheel, tmp / "site"


def test_wheel__ships_every_preset_and_no_tests(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).name for n in names if n.startswith("sweeps/configs/")) == PRESETS
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in (
        "sbl-sweep = sweeps.cli:main",
        "sbl-trial = trainables.run:main",
        "sbl-report = analysis.report:main",
    ):
        assert script in scripts


@pytest.mark.slow
def test_wheel__console_script_dry_run_outside_the_checkout(installed, tmp_path):
    """``sbl-sweep grid_patch_sizes --dry-run`` from the installed files only: the code and the
    preset it reads both come from the install target, never from this checkout."""
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sweeps.cli, sweeps.options as o; print(sweeps.cli.__file__); print(o.CONFIG_DIR)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    out = subprocess.run(
        [
            sys.executable,
            str(site / "bin" / "sbl-sweep"),
            "grid_patch_sizes",
            "--dry-run",
            "--storage-path",
            str(tmp_path / "runs"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grid_patch_sizes" in out.stdout and "trials" in out.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # a dry run records nothing


def test_sweep_cli__lists_sweeps_and_refuses_an_unknown_one(capsys):
    from sweeps import cli

    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in cli.SWEEPS)
    assert cli.main(["grid_patch_size"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'grid_patch_size'" in err and "grid_patch_sizes" in err
