"""tune_hparams.py: an Optuna space or a list of budget-matched candidates."""

from __future__ import annotations

import pytest

from sweeps import tune_hparams
from sweeps.launch import main, prepare
from tests.sweeps.conftest import argv, runs


def _config(tmp_path, body: str) -> str:
    path = tmp_path / "search.yaml"
    path.write_text("methods: [supervised]\nmetric: knn_gain\ntrial: {eval.knn_at_init: true}\n" + body)
    return str(path)


def _dry_run(tmp_path, storage, body: str, *flags: str) -> list[str]:
    """A searched space's dry run (every epoch evaluated, as ASHA needs) with ``flags``."""
    return [
        "--config",
        _config(tmp_path, body),
        "--storage-path",
        str(storage),
        "--set",
        "eval.eval_every=1",
        *flags,
        "--dry-run",
    ]


def test_candidates__one_cell_per_candidate_with_its_overrides(storage, tmp_path, capsys):
    config = _config(
        tmp_path, "candidates:\n  - {model.width: 0.125, optim.epochs: 2}\n  - {model.width: 0.25, optim.epochs: 1}\n"
    )
    args = ["--config", config, "--storage-path", str(storage), "--dry-run"]
    plan, _ = prepare(tune_hparams.SWEEP, args)
    assert [(c["model.width"], c["optim.epochs"]) for c in plan.cells] == [(0.125, 2), (0.25, 1)]
    assert all(c["eval.knn_at_init"] is True for c in plan.cells)
    assert main(tune_hparams.SWEEP, args) == 0
    rows = capsys.readouterr().out.splitlines()[1:4]
    assert rows[0].split()[-1] == "model.width" and [r.split()[-1] for r in rows[1:]] == ["0.125", "0.25"]


def test_candidates__every_seed_runs_every_candidate(storage, tmp_path):
    config = _config(tmp_path, "candidates:\n  - {model.width: 0.125}\n  - {model.width: 0.25}\n")
    plan, _ = prepare(
        tune_hparams.SWEEP, ["--config", config, "--storage-path", str(storage), "--seeds", "3", "4", "--dry-run"]
    )
    assert [(c["system.seed"], c["model.width"]) for c in plan.cells] == [(3, 0.125), (3, 0.25), (4, 0.125), (4, 0.25)]


SPACE = "space: {optim.lr: {loguniform: [0.01, 1.0]}}\n"


@pytest.mark.parametrize(
    ("body", "extra", "message"),
    [
        ("candidates:\n  - {model.widht: 0.5}\n", [], "model.widht"),
        ("candidates: [{model.width: 0.5}]\n" + SPACE, [], "candidates and space are exclusive"),
        ("candidates: [0.5]\n", [], "candidates: [0.5] is invalid; valid: a list of flat overrides"),
        (SPACE, ["--set", "eval.eval_every=2"], "eval.eval_every 2 is invalid for a searched space"),
        (SPACE, ["--set", "eval.eval_every=1", "--seeds", "0", "1"], "seeds 0 1 are invalid for a searched space"),
        (  # a sampled batch larger than the split: refused here, not by the trials that draw it
            "space: {optim.batch_size: {choice: [32, 256]}}\n",
            ["--set", "eval.eval_every=1", "--set", "data.train_per_class=15", "--set", "optim.batch_size=32"],
            "space.optim.batch_size 256: optim.batch_size 256 is larger than the 150 training images",
        ),
    ],
)
def test_search__bad_input_is_a_one_line_error_before_any_trial(storage, tmp_path, capsys, body, extra, message):
    code = main(
        tune_hparams.SWEEP, ["--config", _config(tmp_path, body), "--storage-path", str(storage), "--no-report", *extra]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (storage / "tune_hparams-digits").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("num_samples: abc\n", "num_samples 'abc' is invalid; valid: an integer >= 1"),
        ("asha: {grace_period: x}\n", "asha.grace_period 'x' is invalid; valid: an integer >= 1"),
        ("asha: {grace: 1}\n", "asha {'grace': 1} is invalid; valid: a mapping of grace_period"),
        ("mode: maximum\n", "mode 'maximum' is invalid; valid: min, max"),
        ("space: [optim.lr]\n", "space ['optim.lr'] is invalid; valid: a mapping"),
        ("space: {optim.zzz: {uniform: [1, 2]}}\n", "space key(s) optim.zzz are not config keys of supervised"),
        (
            "space: {optim.lr: {loguniform: [1e-2, abc]}}\n",
            "space.optim.lr: loguniform ['1e-2', 'abc'] is invalid; valid: [low, high]",
        ),
        ("space: {optim.lr: {loguniform: [0, 1]}}\n", "and low > 0"),
        ("space: {optim.lr: {uniform: [-1, 1]}}\n", "space.optim.lr: optim.lr -1.0 is invalid; valid: a number > 0"),
        (
            "space: {optim.batch_size: {uniform: [32, 256]}}\n",
            "uniform draws fractions but optim.batch_size is an integer; valid: randint or choice",
        ),
        (
            "space: {optim.batch_size: {randint: [0, 8]}}\n",
            "space.optim.batch_size: optim.batch_size 0 is invalid; valid: an integer >= 1",
        ),
        (
            "space: {optim.optimizer: {choice: [sgd, adam]}}\n",
            "space.optim.optimizer: optim.optimizer 'adam' is invalid; valid: sgd, lars",
        ),
        ("space: {eval.probe: {choice: []}}\n", "space.eval.probe: choice [] is invalid; valid: a non-empty list"),
    ],
)
def test_search__bad_search_settings_are_refused_in_a_dry_run(storage, tmp_path, capsys, body, message):
    code = main(tune_hparams.SWEEP, _dry_run(tmp_path, storage, body))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_search__numbers_yaml_reads_as_strings_are_numbers_in_the_space(storage, tmp_path):
    body = "num_samples: 1e1\nspace: {optim.weight_decay: {loguniform: [1e-6, 1e-3]}, optim.batch_size: {choice: [16, '32']}}\n"
    plan, _ = prepare(tune_hparams.SWEEP, _dry_run(tmp_path, storage, body))
    assert plan.opts["num_samples"] == 10
    assert plan.opts["space"] == {
        "optim.weight_decay": {"loguniform": [1e-6, 1e-3]},
        "optim.batch_size": {"choice": [16, 32]},
    }


def test_search__a_changed_space_on_resume_is_refused_not_ignored(storage, tmp_path, capsys):
    from sweeps.resume import save_plan

    common = ["--storage-path", str(storage), "--experiment", "s", "--set", "eval.eval_every=1", "--dry-run"]
    plan, _ = prepare(tune_hparams.SWEEP, ["--config", _config(tmp_path, SPACE), *common])
    save_plan(plan)
    prepare(tune_hparams.SWEEP, ["--config", _config(tmp_path, SPACE), *common, "--resume"])  # unchanged: accepted
    wider = "space: {optim.lr: {loguniform: [1e-3, 1.0]}}\n"
    assert main(tune_hparams.SWEEP, ["--config", _config(tmp_path, wider), *common, "--resume"]) == 2
    err = capsys.readouterr().err
    assert (
        "--resume: space is {'optim.lr': {'loguniform': [0.001, 1.0]}} now, {'optim.lr': {'loguniform': [0.01, 1.0]}} when"
        in err
    )


@pytest.mark.slow
def test_candidates__each_runs_to_the_end_and_the_summary_ranks_them_by_gain(storage, tmp_path, ray_shutdown, capsys):
    config = _config(
        tmp_path, "candidates:\n  - {model.width: 0.125, optim.epochs: 2}\n  - {model.width: 0.25, optim.epochs: 1}\n"
    )
    code = main(tune_hparams.SWEEP, argv(storage, "--config", config, "--experiment", "cands", epochs=3))
    out = capsys.readouterr().out
    assert code == 0, out
    _, _, children = runs(storage, "cands")
    by_width = {float(c.data.params["model.width"]): c for c in children}
    assert sorted(by_width) == [0.125, 0.25]
    assert [int(by_width[w].data.params["optim.epochs"]) for w in (0.125, 0.25)] == [2, 1]
    gains = {w: c.data.metrics["knn_gain"] for w, c in by_width.items()}
    for w, c in by_width.items():
        assert gains[w] == pytest.approx(c.data.metrics["knn_acc"] - c.data.metrics["knn_acc_init"])
    assert "seed 0 width 0.125 epochs 2  finished" in out  # progress lines tell candidates apart
    table = out.split("Best configurations by final knn_gain:")[1].splitlines()
    assert "model.width" in table[1] and "optim.epochs" in table[1]
    best = max(gains, key=gains.get)
    assert table[2].split()[0] == f"{best:g}"  # best first


def test_flags__corruption_num_samples_and_metric_override_the_yaml(storage, tmp_path):
    body = "num_samples: 4\nspace: {optim.lr: {loguniform: [0.01, 1.0]}}\n"
    plan, _ = prepare(
        tune_hparams.SWEEP,
        _dry_run(tmp_path, storage, body, "--corruption", "glo_4", "--num-samples", "1e1", "--metric", "loss"),
    )
    assert [c["data.corruption"] for c in plan.cells] == ["glo_4"]
    assert plan.opts["num_samples"] == 10 and plan.opts["metric"] == "loss"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--corruption", "glo_5"], "glo_5"),
        (["--num-samples", "0"], "num_samples 0 is invalid; valid: an integer >= 1"),
        (["--corruption", "swirl_2"], "unknown corruption 'swirl_2'; valid names: defocusblur, gam, glo"),
    ],
)
def test_flags__a_bad_flag_value_is_a_one_line_error(storage, tmp_path, capsys, flags, message):
    code = main(
        tune_hparams.SWEEP, _dry_run(tmp_path, storage, "space: {optim.lr: {loguniform: [0.01, 1.0]}}\n", *flags)
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_search__the_batch_check_judges_the_trials_a_space_can_draw(storage, tmp_path):
    """A sampled value replaces the base cell's: a base batch of 256 that no trial draws is no
    reason to refuse a space of 32 and 64 on 150 images."""
    body = "space: {optim.batch_size: {choice: [32, 64]}}\n"
    flags = ["--set", "eval.eval_every=1", "--set", "data.train_per_class=15", "--set", "optim.batch_size=256"]
    plan, _ = prepare(tune_hparams.SWEEP, ["--config", _config(tmp_path, body), "--storage-path", str(storage), *flags])
    assert plan.cells[0]["optim.batch_size"] == 256
