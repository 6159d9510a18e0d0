"""Every bad input is refused with a one-line error naming it, within seconds, before any trial."""

from __future__ import annotations

import pytest
import ray

from sweeps.grid_patch_sizes import SWEEP as GRID
from sweeps.launch import main
from tests.sweeps.conftest import argv


def _error(capsys, args) -> str:
    code = main(GRID, args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
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
        # a batch larger than the training split: refused here, not by every trial after Ray starts
        (["--set", "data.train_per_class=3", "--set", "optim.batch_size=64"], ["optim.batch_size 64", "30", "<= 30"]),
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
@pytest.mark.parametrize("gpus", ["0.25", "2"])  # a share of one GPU, and a data-parallel trial's two
def test_bad_input__gpus_on_a_cluster_without_gpus(storage, capsys, ray_shutdown, gpus):
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, configure_logging=False)
    err = _error(capsys, argv(storage, "--gpus-per-trial", gpus, "--smoke-test"))
    assert f"--gpus-per-trial {gpus}" in err and "0 GPUs" in err


def test_bad_input__resume_with_a_changed_config_names_the_key(storage, capsys):
    from sweeps.launch import prepare
    from sweeps.resume import save_plan

    plan, _ = prepare(GRID, argv(storage, "--experiment", "e", "--dry-run"))
    save_plan(plan)
    prepare(GRID, argv(storage, "--experiment", "e", "--resume", "--dry-run"))  # unchanged: accepted
    err = _error(capsys, argv(storage, "--experiment", "e", "--resume", "--set", "optim.lr=0.5"))
    assert "optim.lr" in err and "0.5" in err and "--experiment NEW_NAME" in err
    err = _error(capsys, argv(storage, "--experiment", "e", "--resume", "--methods", "supervised"))
    assert f"{len(plan.cells)}" in err and "recorded" in err and "add --set" not in err  # no --set restores a method


def test_bad_input__resume_after_a_default_changed_says_which_set_restores_it(storage, capsys):
    """A sweep recorded at 16 px (every dataset was resized to it before dataset_trial) resumed with
    today's default (the folder's own 32 px: other grids, so another trial count) names the key."""
    from sweeps.launch import prepare
    from sweeps.resume import save_plan

    digits = ["--experiment", "d", "--dataset", "digits"]
    plan, _ = prepare(GRID, argv(storage, *digits, "--set", "data.image_size=16", "--dry-run"))
    save_plan(plan)
    err = _error(capsys, argv(storage, *digits, "--resume"))
    assert "recorded" in err and "add --set data.image_size=16" in err
    prepare(GRID, argv(storage, *digits, "--resume", "--set", "data.image_size=16", "--dry-run"))  # accepted


# --- issue 23 §2: every bad value refused before any trial ----------------------------------------


def _yaml(tmp_path, text: str) -> str:
    """A sweep config: the tiny grid plus ``text`` (later keys win)."""
    from tests.sweeps.conftest import TINY_YAML

    path = tmp_path / "sweep.yaml"
    path.write_text(open(TINY_YAML).read() + text)
    return str(path)


def test_types__numbers_without_a_dot_are_numbers_in_every_trial(storage):
    from sweeps.launch import prepare

    plan, _ = prepare(
        GRID,
        argv(
            storage,
            "--dry-run",
            "--set",
            "optim.weight_decay=5e-4",
            "--set",
            "optim.lr=1e-3",
            "--set",
            "data.memory_budget_gb=1e6",
            "--set",
            "eval.knn_k=1e1",
        ),
    )
    for cell in plan.cells:
        assert (cell["optim.weight_decay"], cell["optim.lr"], cell["data.memory_budget_gb"]) == (5e-4, 1e-3, 1e6)
        assert (
            type(cell["optim.weight_decay"]) is float and cell["eval.knn_k"] == 10 and type(cell["eval.knn_k"]) is int
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "optim.lr=abc"], "optim.lr 'abc' is invalid; valid: a number or null"),
        (["--set", "optim.batch_size=big"], "optim.batch_size 'big' is invalid; valid: an integer"),
        (["--set", "optim.batch_size=1.5"], "optim.batch_size 1.5 is invalid; valid: an integer"),
        (["--set", "model.width=abc"], "model.width 'abc' is invalid; valid: a number"),
        (["--set", "eval.probe=maybe"], "eval.probe 'maybe' is invalid; valid: true or false"),
        (["--set", "system.seed=x"], "system.seed 'x' is invalid; valid: an integer"),
        (
            ["--methods", "moco_v2", "--set", "method.temperature=abc"],
            "method.temperature 'abc' is invalid; valid: a number",
        ),
        (["--set", "optim.lr=["], "--set 'optim.lr=[': the value is malformed YAML"),
        (["--seeds", "-1"], "--seeds -1 is invalid; valid: a list of integers >= 0"),
        (["--gpus-per-trial", "-1"], "--gpus-per-trial -1 is invalid; valid: a number >= 0"),
        (
            ["--gpus-per-trial", "1.5"],
            "--gpus-per-trial 1.5 is invalid; valid: a fraction of one GPU (<= 1) or a whole number",
        ),
        (
            ["--gpus-per-trial", "2.5"],
            "--gpus-per-trial 2.5 is invalid; valid: a fraction of one GPU (<= 1) or a whole",
        ),
        (["--workers-per-trial", "0"], "--workers-per-trial 0 is invalid; valid: an integer >= 1"),
        (["--workers-per-trial", "1.5"], "--workers-per-trial '1.5' is invalid; valid: an integer >= 1"),
        (
            ["--workers-per-trial", "2", "--gpus-per-trial", "0.5"],
            "--workers-per-trial 2 with --gpus-per-trial 0.5 is invalid: a data-parallel trial takes one whole GPU "
            "per worker; valid: --gpus-per-trial 2, or --gpus-per-trial 0 (CPU workers)",
        ),
        (["--gpus-per-trial", "3", "--workers-per-trial", "2"], "--workers-per-trial 2 with --gpus-per-trial 3"),
        (
            ["--workers-per-trial", "3"],
            "optim.batch_size 32 cannot be split over 3 workers per trial; valid: a multiple of 3",
        ),
        (
            ["--workers-per-trial", "2", "--methods", "moco_v2", "--set", "method.bn_splits=3"],
            "method.bn_splits 3 cannot be shared by 2 workers per trial",
        ),
        (
            ["--workers-per-trial", "2", "--set", "system.cuda_graph=true"],
            "system.cuda_graph is invalid with 2 workers per trial (a captured step holds no gradient all-reduce); "
            "valid: system.cuda_graph=false, or one worker per trial",
        ),
        (["--cpus-per-trial", "-1"], "--cpus-per-trial -1 is invalid; valid: a number > 0"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0 is invalid; valid: a number > 0"),
        (["--max-concurrent", "0"], "--max-concurrent 0 is invalid; valid: an integer >= 1"),
        (["--max-concurrent", "-1"], "--max-concurrent -1 is invalid; valid: an integer >= 1"),
        (["--experiment", "../escape"], "--experiment '../escape' is invalid; valid: a folder name (no '/'"),
        (["--experiment", ".."], "--experiment '..' is invalid"),
        (["--epochs", "abc"], "--epochs 'abc' is invalid; valid: an integer >= 0"),
        (["--seeds", "0", "1.5"], "--seeds '1.5' is invalid; valid: a list of integers >= 0"),
        (["--cpus-per-trial", "many"], "--cpus-per-trial 'many' is invalid; valid: a number > 0"),
        (["--max-concurrent"], "error: argument --max-concurrent: expected one argument; see --help"),
    ],
)
def test_flags__bad_values_are_refused_in_one_line_before_anything_is_written(storage, capsys, extra, message):
    try:
        err = _error(capsys, argv(storage, "--dry-run", *extra))
    except SystemExit as exit_:  # argparse's own errors (a missing value) exit, in one line too
        err = capsys.readouterr().err
        assert exit_.code == 2 and err.count("\n") == 1, err
    assert message in err
    assert not storage.exists()  # no folder left behind


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("seeds: [zero]\n", "seeds 'zero' is invalid; valid: a list of integers >= 0"),
        ("seeds: 0\n", "seeds 0 is invalid; valid: a list of integers >= 0"),
        ("resources: {cpu: many, gpu: 0}\n", "resources.cpu 'many' is invalid; valid: a number > 0"),
        ("resources: {cpus: 2}\n", "resources: unknown key(s) cpus; valid: cpu, gpu"),
        ("resources: [1, 0]\n", "resources [1, 0] is invalid; valid: a mapping"),
        ("resources: {cpu: 1, gpu: 0, workers: 0}\n", "resources.workers 0 is invalid; valid: an integer >= 1"),
        ("epochs: abc\n", "epochs 'abc' is invalid; valid: an integer >= 0"),
        ("methods: supervised\n", "methods 'supervised' is invalid; valid: a list of method names"),
        ("max_concurrent: 0\n", "max_concurrent 0 is invalid; valid: an integer >= 1"),
        ("max_failures: abc\n", "max_failures 'abc' is invalid; valid: an integer >= 0"),
        ("include_untrained: maybe\n", "include_untrained 'maybe' is invalid; valid: true or false"),
        ("trial: {optim.lr: abc}\n", "optim.lr 'abc' is invalid; valid: a number or null"),
        ("trial: [optim.lr]\n", "trial ['optim.lr'] is invalid; valid: a mapping"),
        (
            "methods: [moco_v2]\nmethod_params: {moco_v2: {temperature: abc}}\n",
            "method.temperature 'abc' is invalid; valid: a number",
        ),
        ("method_params: {supervised: 3}\n", "method_params.supervised 3 is invalid; valid: a mapping"),
        ("grids: [abc]\n", "grids 'abc' is invalid; valid: a list of integers >= 1"),
        ("families: [zzz]\n", "families 'zzz' is invalid; valid: glo, loc, randglo, randloc"),
        ("families: [gam]\n", "families 'gam' is invalid; valid: glo, loc, randglo, randloc"),
        ("experiment: ../escape\n", "experiment '../escape' is invalid; valid: a folder name"),
        ("report: maybe\n", "report 'maybe' is invalid; valid: true or false (or the --no-report flag)"),
        ("reuse_workers: 1\n", "reuse_workers 1 is invalid; valid: true or false"),
    ],
)
def test_yaml__bad_values_are_refused_in_one_line(storage, tmp_path, capsys, yaml_text, message):
    err = _error(capsys, ["--storage-path", str(storage), "--config", _yaml(tmp_path, yaml_text), "--dry-run"])
    assert message in err


def test_flags__numbers_are_read_as_in_yaml(storage):
    from sweeps.launch import prepare

    plan, _ = prepare(
        GRID,
        argv(
            storage,
            "--dry-run",
            "--epochs",
            "1e0",
            "--seeds",
            "2e0",
            "--cpus-per-trial",
            "1e0",
            "--max-concurrent",
            "2.0",
        ),
    )
    assert {c["system.seed"] for c in plan.cells} == {2} and {c["optim.epochs"] for c in plan.cells} - {0} == {
        1
    }  # 0: untrained
    assert (plan.opts["resources"]["cpu"], plan.opts["max_concurrent"]) == (1.0, 2)


def test_yaml__numbers_yaml_1_1_reads_as_strings_are_numbers(storage, tmp_path):
    from sweeps.launch import prepare

    config = _yaml(tmp_path, "trial: {optim.weight_decay: 5e-4, model.width: 0.125}\nresources: {cpu: 1e0, gpu: 0}\n")
    plan, _ = prepare(GRID, ["--storage-path", str(storage), "--config", config, "--dry-run"])
    assert {c["optim.weight_decay"] for c in plan.cells} == {5e-4} and plan.opts["resources"] == {
        "cpu": 1.0,
        "gpu": 0.0,
        "workers": 1,
    }


@pytest.mark.parametrize("where", ["proc", "file", "below_a_file"])
def test_storage__an_unusable_path_is_refused_before_ray(storage, tmp_path, capsys, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    path = {"proc": "/proc/sbl-x", "file": str(a_file), "below_a_file": str(a_file / "runs")}[where]
    err = _error(capsys, [*argv(storage)[2:], "--storage-path", path, "--dry-run"])  # checked in a dry run too
    assert f"--storage-path {path!r}" in err and ("not writable" in err or "is a file" in err)


@pytest.mark.parametrize("content", ["garbage", "other_sqlite"])
def test_mlflow_uri__a_file_that_is_no_mlflow_store_is_refused_untouched(storage, tmp_path, capsys, content):
    import sqlite3

    store = tmp_path / "store.db"
    if content == "garbage":
        store.write_bytes(bytes(range(256)) * 4)
    else:
        with sqlite3.connect(store) as db:
            db.execute("CREATE TABLE trials (x)")
    before = store.read_bytes()
    err = _error(capsys, argv(storage, "--mlflow-uri", f"sqlite:///{store}"))
    assert err.startswith(f"error: MLflow URI 'sqlite:///{store}': ")
    assert ("is not an SQLite database" if content == "garbage" else "another program's tables (trials)") in err
    assert store.read_bytes() == before and not ray.is_initialized()


def test_storage__a_url_is_refused_not_made_a_local_folder(storage, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, [*argv(storage)[2:], "--storage-path", "s3://bucket/runs", "--dry-run"])
    assert "--storage-path 's3:/bucket/runs' is a URL (s3://...), not a folder; valid: a local or mounted folder" in err
    from sweeps.options import build_parser

    assert "s3://" not in build_parser("", "grid_patch_sizes").format_help()


def test_storage__a_read_only_filesystem_is_refused(tmp_path, capsys, monkeypatch):
    import subprocess

    monkeypatch.setenv("SBL_CACHE_DIR", str(tmp_path / "cache"))
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root and CAP_SYS_ADMIN")
    try:
        err = _error(capsys, [*argv(tmp_path)[2:], "--storage-path", str(ro / "runs"), "--dry-run"])
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert "not writable (Read-only file system" in err


def test_data__a_first_training_file_that_is_no_image_is_one_line(storage, tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "tree" / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / split / "a" / "1.png")
    bad = tmp_path / "tree" / "train" / "a" / "0.png"
    bad.write_text("not an image")
    err = _error(capsys, argv(storage, "--dry-run", "--dataset", f"imagefolder:{tmp_path / 'tree'}"))
    assert f"cannot read image {str(bad)!r}" in err


def test_data__a_torchvision_dataset_offline_is_one_line(storage, tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # never downloads, online or not
    err = _error(capsys, argv(storage, "--dry-run", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")))
    assert "CIFAR10 is not under" in err and "download failed" in err and "--data-dir" in err


def test_address__a_dead_port_fails_at_once_in_one_line(storage, capsys):
    err = _error(capsys, argv(storage, "--address", "127.0.0.1:1"))
    assert "--address '127.0.0.1:1': nothing listens there" in err and "host:port" in err
    assert not ray.is_initialized()


def test_address__auto_follows_ray_address_and_fails_at_once(storage, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # never the cluster of whatever else runs on this machine
    err = _error(capsys, argv(storage, "--address", "auto"))
    assert "--address 'auto' (resolved to '127.0.0.1:1' by RAY_ADDRESS): nothing listens there" in err


def test_address__a_port_that_is_no_ray_head_fails_within_seconds(storage, capsys, monkeypatch):
    import socket

    monkeypatch.setattr("sweeps.preflight.CONNECT_TIMEOUT_S", 1.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        port = silent.getsockname()[1]
        err = _error(capsys, argv(storage, "--address", f"127.0.0.1:{port}"))
    assert f"--address '127.0.0.1:{port}': no answer within 1 s" in err


def test_address__ray_client_is_refused_and_not_offered(storage, capsys):
    err = _error(capsys, argv(storage, "--address", "ray://127.0.0.1:10001"))
    assert "Ray Client (ray://) is not supported" in err
    from sweeps.options import build_parser

    assert "ray://host" not in build_parser("", "grid_patch_sizes").format_help()


@pytest.mark.parametrize("joins", [False, True])
def test_address__ray_core_warnings_while_joining_are_shown_only_if_it_joins(capfd, monkeypatch, joins):
    """An address that answers HTTP/2 but is no Ray head (a proxy) passes the preflight; ray.init's
    C++ client then writes a warning a second to fd 2 for ~20 s before it gives up."""
    import os

    from sweeps import execute
    from sweeps.options import SweepError

    def init(**kwargs):
        os.write(2, b"[W gcs_client.cc:210] Failed to get cluster ID from GCS server\n")
        if not joins:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379.")

    monkeypatch.setattr(execute.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(execute.ray, "init", init)
    if joins:
        execute.connect("10.0.0.5:6379")
    else:
        with pytest.raises(SweepError, match=r"^--address '10.0.0.5:6379': no Ray cluster there"):
            execute.connect("10.0.0.5:6379")
    assert ("Failed to get cluster ID" in capfd.readouterr().err) == joins


def test_address__ctrl_c_while_connecting_is_one_line_and_130(storage, capsys, monkeypatch):
    def interrupted(plan):
        raise KeyboardInterrupt

    monkeypatch.setattr("sweeps.execute.execute", interrupted)
    code = main(GRID, argv(storage))
    err = capsys.readouterr().err.strip()
    assert code == 130 and err == "error: interrupted (Ctrl+C); no trial had started"


def test_untrained__epochs_0_adds_no_duplicate_trial(storage, tmp_path):
    import json

    from sweeps.launch import prepare

    plan, _ = prepare(
        GRID,
        [
            "--storage-path",
            str(storage),
            "--config",
            _yaml(tmp_path, "include_untrained: true\n"),
            "--epochs",
            "0",
            "--dry-run",
        ],
    )
    keys = [json.dumps(c, sort_keys=True) for c in plan.cells]
    assert len(keys) == len(set(keys)) == 3  # ori, glo_4, loc_4: each once, untrained
    # Two methods at 0 epochs evaluate the same initial backbone: one untrained trial per corruption x seed.
    plan, _ = prepare(
        GRID,
        [
            "--storage-path",
            str(storage),
            "--config",
            _yaml(tmp_path, "include_untrained: true\n"),
            "--methods",
            "supervised",
            "moco_v2",
            "--seeds",
            "0",
            "1",
            "--epochs",
            "0",
            "--dry-run",
        ],
    )
    assert sorted((c["data.corruption"], c["system.seed"]) for c in plan.cells) == sorted(
        (c, s) for c in ("ori", "glo_4", "loc_4") for s in (0, 1)
    )
    # Trained cells are never merged, whatever their method.
    plan, _ = prepare(
        GRID,
        [
            "--storage-path",
            str(storage),
            "--config",
            _yaml(tmp_path, "include_untrained: true\n"),
            "--methods",
            "supervised",
            "moco_v2",
            "--epochs",
            "1",
            "--dry-run",
        ],
    )
    assert len(plan.cells) == 3 * 2 + 3


def test_resume__a_changed_max_failures_is_refused(storage, tmp_path, capsys):
    from sweeps.launch import prepare
    from sweeps.resume import save_plan

    common = ["--storage-path", str(storage), "--experiment", "e", "--dry-run"]
    plan, _ = prepare(GRID, [*common, "--config", _yaml(tmp_path, "")])
    save_plan(plan)
    prepare(GRID, [*common, "--config", _yaml(tmp_path, "max_failures: 2\n"), "--resume"])  # unchanged: accepted
    err = _error(capsys, [*common, "--config", _yaml(tmp_path, "max_failures: 5\n"), "--resume"])
    assert "--resume: max_failures is 5 now, 2 when the sweep started" in err and "max_failures: 2" in err
    err = _error(capsys, [*common, "--config", _yaml(tmp_path, ""), "--max-concurrent", "3", "--resume"])
    assert "--resume: max_concurrent is 3 now, None when the sweep started, and Tune would keep None" in err


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("corruptions: glo_4\n", "corruptions 'glo_4' is invalid; valid: a list of corruption specs"),
        ("extra_seeds: {glo_4: 1}\n", "extra_seeds.glo_4 1 is invalid; valid: a list of integers >= 0"),
        ("extra_seeds: [1]\n", "extra_seeds [1] is invalid; valid: a mapping of corruption to seeds"),
        (
            "extra_arms: {method: supervised}\n",
            "extra_arms {'method': 'supervised'} is invalid; valid: a list of mappings",
        ),
    ],
)
def test_paper_table1__bad_yaml_values_are_one_line(storage, tmp_path, capsys, yaml_text, message):
    from sweeps.paper_table1 import SWEEP as TABLE1

    config = tmp_path / "t1.yaml"
    config.write_text(
        "methods: [supervised]\nseeds: [0]\nepochs: 1\ncorruptions: [glo_4]\n"
        "trial: {data.train_per_class: 20, data.test_per_class: 10}\n" + yaml_text
    )
    assert main(TABLE1, ["--storage-path", str(storage), "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


@pytest.mark.slow
def test_address__a_running_ray_head_passes_the_check(ray_shutdown):
    from sweeps.preflight import check_address

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    check_address(ray.get_runtime_context().gcs_address)  # answers like a Ray head: no error


@pytest.mark.slow
def test_resume__keys_added_to_the_code_since_the_recording_are_accepted_at_their_defaults(storage, capsys):
    import json

    from sweeps.launch import prepare
    from sweeps.resume import PLAN_FILE, save_plan

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


def test_bad_input__a_dry_run_warns_of_a_batch_larger_than_the_training_split(storage, capsys):
    """A dry run plans a preset on any folder (the ImageNet presets on a tiny one): it warns, once."""
    from sweeps.launch import prepare

    tight = ["--set", "data.train_per_class=3", "--set", "optim.batch_size=64", "--dry-run"]
    plan, dry_run = prepare(GRID, argv(storage, *tight))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert dry_run and plan.cells and len(warnings) == 1
    assert "optim.batch_size 64 is larger than the 30 training images" in warnings[0]


def test_bad_input__a_misspelt_dataset_trial_name(storage, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("dataset_trial:\n  shape: {data.image_size: 16}\n")
    err = _error(capsys, argv(storage, "--config", str(config)))
    assert "'shape'" in err and "shapes" in err and "imagefolder" in err


def test_bad_input__resume_on_a_folder_whose_images_changed_is_refused(storage, tmp_path, tiny_imagefolder, capsys):
    """Images added to the folder (or read otherwise by a newer decoder) since the sweep started would
    mix two datasets in one study: --resume names both contents and sizes."""
    import shutil

    from sweeps.launch import prepare
    from sweeps.resume import save_plan

    folder = shutil.copytree(tiny_imagefolder, tmp_path / "folder")
    flags = ["--experiment", "f", "--dataset", f"imagefolder:{folder}", "--set", "data.image_size=16"]
    flags += ["--set", "data.train_per_class=4", "--set", "optim.batch_size=4"]
    plan, _ = prepare(GRID, argv(storage, *flags, "--dry-run"))
    save_plan(plan)
    prepare(GRID, argv(storage, *flags, "--resume", "--dry-run"))  # the same files: accepted
    shutil.copy(folder / "train/n01440764/0.JPEG", folder / "train/n01440764/new.JPEG")
    err = _error(capsys, argv(storage, *flags, "--resume"))
    assert "is not the one the sweep started on" in err and "train_images 36" in err and "train_images 37" in err
