"""What a launch refuses before any trial starts: a second sweep under a name the MLflow store already
holds, a --resume into another MLflow store, and a --resume from a folder others could have written."""

from __future__ import annotations

import os
import shutil

import pytest
import ray
import yaml

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.sweeps.conftest import TINY_YAML, argv, runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One finished one-trial sweep ``first`` in storage ``a`` whose MLflow store is given explicitly
    (as a shared server would be): (root, its --mlflow-uri, the argv that made it, minus storage)."""
    root = tmp_path_factory.mktemp("guards")
    config = {**yaml.safe_load(open(TINY_YAML)), "families": ["glo"], "grids": [1]}  # glo_1 is the identity: ori only
    (root / "one.yaml").write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    extra = ["--experiment", "first", "--mlflow-uri", uri, "--config", str(root / "one.yaml")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SBL_CACHE_DIR", str(root / "cache"))
        code = main(GRID, argv(root / "a", *extra, epochs=1))
        if ray.is_initialized():
            ray.shutdown()
    assert code == 0
    return root, uri, extra


@pytest.fixture
def cache(launched, monkeypatch):
    monkeypatch.setenv("SBL_CACHE_DIR", str(launched[0] / "cache"))


def _parents(root):
    _, parents, children = runs(root / "store", "first")  # the store lives in root/store
    return parents, children


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_launch__a_new_sweep_under_a_name_the_mlflow_store_holds_is_refused(
    launched, tmp_path, cache, capsys, ray_shutdown
):
    root, uri, extra = launched
    parents_before, _ = _parents(root)
    code = main(GRID, argv(tmp_path / "b", *extra, epochs=1))  # same name and store, another --storage-path
    err = _error(capsys)
    assert code == 2
    assert uri in err and parents_before[0].info.run_id in err and "--resume" in err and "--experiment" in err, err
    assert str(root / "a" / "first") in err, err  # where the recorded sweep lives
    parents, children = _parents(root)
    assert len(parents) == 1 and len(children) == 1  # nothing written
    assert not (tmp_path / "b" / "first").exists()


def test_launch__a_new_sweep_after_its_tune_folder_was_deleted_is_refused(
    launched, tmp_path, cache, capsys, ray_shutdown
):
    root, _, extra = launched
    folder, aside = root / "a" / "first", tmp_path / "first-aside"
    shutil.move(folder, aside)  # as if deleted
    try:
        code = main(GRID, argv(root / "a", *extra, epochs=1))
        err = _error(capsys)
    finally:
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(aside, folder)
    assert code == 2 and "--experiment" in err, err
    parents, children = _parents(root)
    assert len(parents) == 1 and len(children) == 1


def test_resume__into_another_mlflow_store_is_refused_naming_both(launched, tmp_path, cache, capsys, ray_shutdown):
    root, uri, extra = launched
    other = f"sqlite:///{tmp_path / 'other.db'}"
    args = [a if a != uri else other for a in extra]
    code = main(GRID, argv(root / "a", *args, "--resume", epochs=1))
    err = _error(capsys)
    assert code == 2 and uri in err and other in err, err
    assert not (tmp_path / "other.db").exists()  # no empty store created


def test_resume__a_sweep_from_before_the_store_was_recorded_is_refused_if_its_parent_run_is_not_there(
    launched, tmp_path, cache, capsys, ray_shutdown
):
    root, uri, extra = launched
    record = root / "a" / "first" / "sweep_record.json"
    saved = record.read_bytes()
    record.unlink()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    try:
        code = main(GRID, argv(root / "a", *[a if a != uri else other for a in extra], "--resume", epochs=1))
        err = _error(capsys)
    finally:
        record.write_bytes(saved)
    assert code == 2 and other in err and "parent run" in err, err
    assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize(
    "what",
    [
        "experiment folder writable by group",
        "storage folder writable by others",
        "tuner.pkl owned by another user",
        "experiment state writable by others",
    ],
)
def test_resume__refuses_a_folder_someone_else_could_have_written(what, launched, cache, capsys, ray_shutdown):
    """--resume unpickles Tune's state: a file another user could write is code they could run."""
    root, _, extra = launched
    folder = root / "a" / "first"
    path, change = {
        "experiment folder writable by group": (folder, lambda p: p.chmod(p.stat().st_mode | 0o020)),
        "storage folder writable by others": (root / "a", lambda p: p.chmod(p.stat().st_mode | 0o002)),
        "tuner.pkl owned by another user": (folder / "tuner.pkl", lambda p: os.chown(p, 65534, -1)),
        "experiment state writable by others": (
            next(folder.glob("experiment_state-*.json")),
            lambda p: p.chmod(p.stat().st_mode | 0o002),
        ),
    }[what]
    stat = path.stat()
    if what.endswith("another user") and os.getuid() != 0:
        pytest.skip("changing a file's owner needs root")
    change(path)
    try:
        code = main(GRID, argv(root / "a", *extra, "--resume", epochs=1))
        err = _error(capsys)
    finally:
        os.chown(path, stat.st_uid, stat.st_gid)
        path.chmod(stat.st_mode)
    assert code == 2 and str(path) in err, err
