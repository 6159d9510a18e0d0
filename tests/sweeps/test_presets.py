"""paper_table1.py (budgets, extra seeds) and downstream.py (pretrain, then frozen probes)."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.frame import config_arm
from sweeps import downstream, paper_table1
from sweeps.launch import main, prepare
from sweeps.options import CONFIG_DIR, SweepError
from sweeps.resume import PLAN_FILE
from tests.sweeps.conftest import argv, runs


def test_budget__picks_the_budget_yaml_unless_config_is_given_and_refuses_unknown_budgets(capsys):
    from sweeps.options import build_parser, config_path

    parser = build_parser("", "paper_table1", paper_table1.SWEEP.flags)
    pick = lambda argv: config_path(parser.parse_args(argv), "paper_table1", paper_table1.SWEEP.flags)  # noqa: E731
    assert pick(["--budget", "gpu"]) == CONFIG_DIR / "paper_table1_gpu.yaml"
    assert pick([]) == CONFIG_DIR / "paper_table1_cpu.yaml"
    assert str(pick(["--config", "x.yaml", "--budget", "gpu"])) == "x.yaml"
    with pytest.raises(SystemExit) as exit_:  # argparse's own error, in one line
        main(paper_table1.SWEEP, ["--budget", "tpu", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert (
        len(err.splitlines()) == 1 and "--budget: invalid choice: 'tpu'" in err and "'cpu', 'gpu', 'gpu_check'" in err
    )


@pytest.mark.parametrize("budget", ["cpu", "gpu"])
def test_paper_table1__every_budget_plans_table1_with_untrained_references(storage, budget):
    plan, _ = prepare(
        paper_table1.SWEEP, ["--budget", budget, "--dataset", "digits", "--storage-path", str(storage), "--dry-run"]
    )
    trained = [c for c in plan.cells if c["optim.epochs"] > 0]
    untrained = [c for c in plan.cells if c["optim.epochs"] == 0]
    corruptions = {c["data.corruption"] for c in trained}
    assert {"ori", "glo_4", "loc_8"} <= corruptions <= set(paper_table1.TABLE1)
    assert {(c["data.corruption"], c["system.seed"]) for c in untrained} == {
        (c["data.corruption"], c["system.seed"]) for c in trained
    }
    if budget == "gpu":
        assert len(trained) == 6 * 5 * 3 and plan.opts["resources"]["gpu"] == 0.5
        assert {c["model.width"] for c in trained} == {1.0}
        assert {(c["method"] == "supcon", c["optim.epochs"]) for c in trained} == {(False, 200), (True, 400)}


def test_paper_table1__gpu_preset_on_4_gpus_per_trial_plans_without_cuda_graphs(storage, capsys):
    """docs/cluster.md's multi-GPU command: the preset's graphs are turned off (one NOTE), not refused."""
    gpu = ["--budget", "gpu", "--dataset", "digits", "--storage-path", str(storage), "--dry-run"]
    one = prepare(paper_table1.SWEEP, gpu)[0].cells
    assert {c["method"] for c in one if c["system.cuda_graph"]} == {"supervised", "moco_v2"}
    assert "NOTE" not in capsys.readouterr().out  # one worker per trial: the graphs stay
    four = prepare(paper_table1.SWEEP, [*gpu, "--gpus-per-trial", "4"])[0].cells
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("NOTE:")]
    assert notes == [
        "NOTE: system.cuda_graph turned off for moco_v2, supervised: 4 workers per trial "
        "(a captured step holds no gradient all-reduce); their other speed levers stay"
    ]
    assert not any(c["system.cuda_graph"] for c in four)
    assert [{**c, "system.cuda_graph": False} for c in one] == four  # nothing else changed (compile, fused, ...)
    # an explicit --set is the user's: refused with the fix named (tests/sweeps/test_bad_inputs.py, on the CLI)
    with pytest.raises(SweepError, match=r"system.cuda_graph is invalid with 4 workers per trial .*valid: system"):
        prepare(paper_table1.SWEEP, [*gpu, "--gpus-per-trial", "4", "--set", "system.cuda_graph=true"])


def test_more_cells__extra_seeds_for_some_corruptions_only():
    cells = [
        {"method": m, "data.corruption": c, "system.seed": 0, "optim.epochs": 5}
        for m in ("supervised", "moco_v2")
        for c in ("ori", "glo_4", "loc_8")
    ]
    opts = {"seeds": [0], "extra_seeds": {"ori": [1, 2], "glo_4": [1]}, "include_untrained": True}
    extra = paper_table1.more_cells(opts, cells)
    seeds = sorted((c["method"], c["data.corruption"], c["system.seed"]) for c in extra if c["optim.epochs"] > 0)
    assert seeds == sorted(
        (m, c, s) for m in ("supervised", "moco_v2") for c, s in (("ori", 1), ("ori", 2), ("glo_4", 1))
    )
    assert len([c for c in extra if c["optim.epochs"] == 0]) == 3 + 3  # one per corruption x seed
    with pytest.raises(
        SweepError, match=r"extra_seeds: corruption\(s\) glo_8 are not in this sweep; valid: glo_4, loc_8, ori"
    ):
        paper_table1.more_cells({**opts, "extra_seeds": {"glo_8": [1]}}, cells)


def test_downstream__a_missing_checkpoint_is_a_one_line_error(storage, capsys):
    code = main(downstream.probe_sweep(None), argv(storage, "--set", "model.init_checkpoint=/nowhere/state.pt"))
    assert code == 2 and "model.init_checkpoint '/nowhere/state.pt' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_downstream__pretrains_on_clean_data_then_probes_each_corruption_frozen(
    storage, tiny_imagefolder, ray_shutdown, capsys
):
    """downstream.yaml's --smoke-test on a tiny ImageFolder (issue 27). It fine-tunes in stage 2 (its
    smoke test: 1 epoch); stage 1 never does."""
    folder = ["--dataset", f"imagefolder:{tiny_imagefolder}", "--set", "data.image_size=32"]  # odd-sized JPEGs
    smoke = ["--smoke-test", "--no-report", "--methods", "supervised", "--experiment", "downstream-tiny"]
    code = downstream.run(["--storage-path", str(storage), *smoke, *folder])
    out = capsys.readouterr().out
    assert code == 0, out
    _, _, pretrain = runs(storage, "downstream-tiny-pretrain")
    assert [(r.data.params["data.corruption"], r.data.params["optim.epochs"]) for r in pretrain] == [("ori", "1")]
    assert (
        pretrain[0].data.params["eval.finetune"].lower() == "false" and "finetune_acc" not in pretrain[0].data.metrics
    )
    _, _, probes = runs(storage, "downstream-tiny")
    inits = {r.data.params["data.corruption"]: r.data.params["model.init_checkpoint"] for r in probes}
    trained = {c: p for c, p in inits.items() if p != "null"}
    assert set(trained) == {"ori", "glo_4"} and len(set(trained.values())) == 1
    assert all(r.data.params["optim.epochs"] == "0" and r.info.status == "FINISHED" for r in probes)
    assert len(probes) == 4  # 2 probes + the untrained reference of each corruption
    assert {r.data.params["data.dataset"] for r in pretrain + probes} == {f"imagefolder:{tiny_imagefolder}"}
    assert all(0 <= r.data.metrics["finetune_acc"] <= 100 for r in probes)  # eval.finetune: every cell fine-tunes


def test_method_params__bare_keys_are_method_parameters_dotted_keys_flat_trial_keys(storage, tmp_path):
    config = tmp_path / "per_method.yaml"
    config.write_text(
        "methods: [supervised, moco_v2]\ncorruptions: [ori]\n"
        "method_params:\n  moco_v2: {queue_size: 64, optim.lr: 0.05}\n  supervised: {optim.batch_size: 16}\n"
    )
    plan, _ = prepare(paper_table1.SWEEP, ["--config", str(config), "--storage-path", str(storage), "--dry-run"])
    by_method = {c["method"]: c for c in plan.cells}
    assert by_method["moco_v2"]["method.queue_size"] == 64 and by_method["moco_v2"]["optim.lr"] == 0.05
    assert by_method["moco_v2"]["optim.batch_size"] == 256 and by_method["supervised"]["optim.batch_size"] == 16
    assert by_method["supervised"]["optim.lr"] == 0.4  # the method's own default


def test_more_cells__an_extra_arm_copies_its_methods_cells_with_its_overrides():
    cells = [
        {"method": m, "data.corruption": c, "system.seed": 0, "optim.epochs": 5}
        for m in ("supervised", "moco_v2")
        for c in ("ori", "glo_4")
    ]
    opts = {
        "methods": ["supervised", "moco_v2"],
        "seeds": [0],
        "extra_seeds": {"ori": [1]},
        "include_untrained": True,
        "extra_arms": [{"method": "supervised", "data.labels_per_class": 100, "optim.epochs": 50}],
    }
    extra = paper_table1.more_cells(opts, cells)
    arm = [c for c in extra if c.get("data.labels_per_class") == 100]
    assert sorted((c["data.corruption"], c["system.seed"]) for c in arm) == [("glo_4", 0), ("ori", 0), ("ori", 1)]
    assert {c["method"] for c in arm} == {"supervised"} and {c["optim.epochs"] for c in arm} == {50}
    assert len([c for c in extra if c["optim.epochs"] == 0]) == 3  # the untrained references are not doubled
    with pytest.raises(
        SweepError,
        match=r"extra_arms\[0\]: method 'dino' is not swept; valid: a mapping with method \(supervised, moco_v2\)",
    ):
        paper_table1.more_cells({**opts, "extra_arms": [{"method": "dino"}]}, cells)


@pytest.mark.parametrize(
    ("deviations", "message"),
    [
        ("{key: x}", r"deviations must be a list of \{key, ours, study, reason\} mappings, got dict"),
        (
            "[{key: lr, ours: 1, study: 2}]",
            r"deviations\[0\] has missing reason; valid: a mapping with key, ours, study, reason",
        ),
        ("[{key: lr, ours: 1, study: 2, reason: r, why: w}]", r"deviations\[0\] has unknown why"),
        ("[{key: lr, ours: 1, study: 2, reason: ' '}]", r"deviations\[0\] has an empty reason"),
        (
            "[{key: lr, ours: 1, study: 2, reason: r, methods: [simsiam]}]",
            r"deviations\[0\] \(lr\): methods \['simsiam'\] is invalid; valid: a list of barlow_twins, byol",
        ),
    ],
)
def test_deviations__a_malformed_entry_is_a_one_line_error(storage, tmp_path, deviations, message):
    config = tmp_path / "deviations.yaml"
    config.write_text(f"methods: [supervised]\ncorruptions: [ori]\ndeviations: {deviations}\n")
    with pytest.raises(SweepError, match=message):
        prepare(paper_table1.SWEEP, ["--config", str(config), "--storage-path", str(storage), "--dry-run"])


def test_deviations__a_well_formed_list_changes_no_trial(storage, tmp_path):
    plain, listed = tmp_path / "plain.yaml", tmp_path / "listed.yaml"
    plain.write_text("methods: [supervised]\ncorruptions: [ori]\n")
    listed.write_text(
        plain.read_text() + "deviations:\n  - {key: lr, methods: [supervised], ours: 0.4, study: 3.6, reason: r}\n"
    )
    cells = [
        prepare(paper_table1.SWEEP, ["--config", str(c), "--storage-path", str(storage), "--dry-run"])[0].cells
        for c in (plain, listed)
    ]
    assert cells[0] == cells[1]


def test_downstream__timm_weights_skip_stage_1_and_the_references_stay_untrained(
    storage, tmp_path, monkeypatch, capsys
):
    from trainables.backbone import build_backbone

    monkeypatch.chdir(tmp_path)  # relative paths on the command line reach the trials absolute
    torch.save(build_backbone("resnet18", small_stem=False, width=0.125)[0].state_dict(), "resnet18.pth")
    timm = ["--set", "model.pretrained=true", "--set", "model.pretrained_file=resnet18.pth"]
    timm += ["--set", "data.normalization=pretrained", "--set", "data.cache_dir=cache"]
    two = ["--methods", "supervised", "moco_v2", "--dry-run"]
    code = downstream.run(argv(storage, *two, *timm))
    out = capsys.readouterr().out
    assert code == 0 and "stage 1: skipped" in out and "digits-pretrain" not in out
    plan, _ = prepare(downstream.probe_sweep(None), argv(storage, *two, *timm))
    given = [c for c in plan.cells if c["model.pretrained"]]
    untrained = [c for c in plan.cells if not c["model.pretrained"]]
    assert len(given) == 2 * len(untrained) == 2 * len(plan.cells) // 3 > 0  # one reference per corruption
    weights = str(tmp_path / "resnet18.pth")
    assert all(c["optim.epochs"] == 0 and c["model.pretrained_file"] == weights for c in given)
    assert {config_arm(c) for c in given} == {"supervised", "moco_v2"}  # the same weights, each arm asked for
    assert {config_arm(c) for c in untrained} == {"untrained"}
    assert all(
        c["model.init_checkpoint"] is None and c["data.cache_dir"] == str(tmp_path / "cache") for c in plan.cells
    )
    assert {c["data.normalization"] for c in plan.cells} == {"pretrained"}  # the references see the same inputs
    # --resume is checked against stage 2's recorded plan, not stage 1's one-corruption plan
    (storage / plan.experiment).mkdir(parents=True)
    (storage / plan.experiment / PLAN_FILE).write_text(json.dumps(plan.cells))
    assert downstream.run(argv(storage, *two, *timm, "--resume")) == 0, capsys.readouterr().err


def test_downstream__each_stage_resumes_only_once_it_has_begun(tmp_path):
    """Interrupted in stage 1, `--resume` continues stage 1 and starts stage 2 afresh (a --resume of
    a stage 2 that never began would be refused); a stage 1 that has begun continues even unasked."""
    base = downstream.without_resume(["--methods", "supervised", "--res", "--resume"])
    assert base == ["--methods", "supervised"]

    def stages(resume, dry_run=False):
        one, two = downstream.stage_argv(base, resume, dry_run, tmp_path, "ds")
        return "--resume" in one, "--resume" in two, one[one.index("--experiment") + 1]

    assert stages(True) == (False, False, "ds-pretrain")  # nothing begun: both start
    (tmp_path / "ds-pretrain").mkdir()
    assert stages(True) == (True, False, "ds-pretrain")  # interrupted in stage 1
    assert stages(False) == (True, False, "ds-pretrain") and stages(False, dry_run=True)[0] is False
    (tmp_path / "ds").mkdir()
    assert stages(True) == (True, True, "ds-pretrain")  # interrupted in stage 2
    assert stages(False)[1] is False  # stage 2 continues only when asked: the launcher then says to pass --resume


def test_dataset_trial__the_shapes_size_never_resizes_another_dataset(storage):
    """grid_patch_sizes.yaml draws the embedded shapes at 16 px (dataset_trial.shapes); a user's
    --dataset keeps its own size (it was resized to 16 px too), and --set still wins."""
    from sweeps import grid_patch_sizes

    def size(*flags):
        plan, _ = prepare(grid_patch_sizes.SWEEP, ["--storage-path", str(storage), "--dry-run", *flags])
        return {c.get("data.image_size") for c in plan.cells}

    assert size() == {16}
    assert size("--dataset", "digits") == {None}
    assert size("--dataset", "digits", "--set", "data.image_size=24") == {24}
    assert size("--smoke-test") == {16}
