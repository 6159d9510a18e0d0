"""Every bad input is refused with a one-line error naming it, within seconds, before any trial."""

from __future__ import annotations

import time

import pytest
import ray

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.sweeps.conftest import argv


def _error(capsys, args) -> str:
    start = time.perf_counter()
    code = main(GRID, args)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < 30, (code, elapsed, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err  # (Ray's own start-up notice may precede it)
    return errors[0]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--methods", "mocov3"], ["'mocov3'", "moco_v2", "supervised"]),
        (["--dataset", "mnist"], ["'mnist'", "digits", "imagefolder:<path>"]),
        (["--dataset", "imagefolder:/no/such/folder"], ["/no/such/folder", "does not exist"]),
        (["--mlflow-uri", "http://127.0.0.1:9"], ["http://127.0.0.1:9", "unreachable"]),
        (["--mlflow-uri", "sqlite:///relative.db"], ["relative", "valid"]),
        (["--set", "optim.optimizer=adam"], ["'adam'", "lars", "sgd"]),
    ],
)
def test_bad_input__one_line_error(storage, capsys, extra, named):
    err = _error(capsys, argv(storage, *extra))
    for piece in named:
        assert piece in err


def test_bad_input__grid_not_dividing_image(storage, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("grids: [7]\n")
    err = _error(capsys, argv(storage, "--config", str(config)))
    assert "glo_7" in err and "1, 2, 4, 8, 16, 32" in err


def test_bad_input__unknown_corruption_in_the_axis(storage, tmp_path, capsys):
    from sweeps.gamma import SWEEP as GAMMA

    config = tmp_path / "gamma.yaml"
    config.write_text("gammas: [-1]\n")
    assert main(GAMMA, argv(storage, "--config", str(config))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "gam_-1" in err and "valid" in err and "\n" not in err


def test_bad_input__malformed_yaml(storage, tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("methods: [supervised\nepochs: 2\n")
    err = _error(capsys, argv(storage, "--config", str(config)))
    assert str(config) in err and "line" in err


def test_bad_input__unknown_yaml_key(storage, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("method: [supervised]\n")
    err = _error(capsys, argv(storage, "--config", str(config)))
    assert "method" in err and "methods" in err


def test_bad_input__existing_experiment_needs_resume(storage, capsys):
    (storage / "exists").mkdir(parents=True)
    err = _error(capsys, argv(storage, "--experiment", "exists"))
    assert "--resume" in err


@pytest.mark.slow
def test_bad_input__gpus_on_a_cluster_without_gpus(storage, capsys, ray_shutdown):
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, configure_logging=False)
    err = _error(capsys, argv(storage, "--gpus-per-trial", "0.25", "--smoke-test"))
    assert "0.25" in err and "0 GPUs" in err


def test_bad_input__resume_with_a_changed_config_names_the_key(storage, capsys):
    from sweeps.launch import prepare, save_plan

    plan, _ = prepare(GRID, argv(storage, "--experiment", "e", "--dry-run"))
    save_plan(plan)
    prepare(GRID, argv(storage, "--experiment", "e", "--resume", "--dry-run"))  # unchanged: accepted
    err = _error(capsys, argv(storage, "--experiment", "e", "--resume", "--set", "optim.lr=0.5"))
    assert "optim.lr" in err and "0.5" in err and "--experiment NEW_NAME" in err
    err = _error(capsys, argv(storage, "--experiment", "e", "--resume", "--methods", "supervised"))
    assert f"{len(plan.cells)}" in err and "recorded" in err


def test_resume__keys_added_to_the_code_since_the_recording_are_accepted_at_their_defaults(storage, capsys):
    import json

    from sweeps.launch import PLAN_FILE, prepare, save_plan

    plan, _ = prepare(GRID, argv(storage, "--experiment", "e", "--dry-run"))
    save_plan(plan)
    path = plan.experiment_path / PLAN_FILE
    recorded = json.loads(path.read_text())
    for cell in recorded:  # as recorded by code from before these keys existed
        del cell["system.compile_mode"], cell["eval.bank_dtype"]
    path.write_text(json.dumps(recorded))
    prepare(GRID, argv(storage, "--experiment", "e", "--resume", "--dry-run"))  # accepted
    err = _error(capsys, argv(storage, "--experiment", "e", "--resume", "--set", "eval.bank_dtype=bf16"))
    assert "eval.bank_dtype" in err and "bf16" in err  # a new key away from its default is a change
