"""run_trial end to end on tiny digits trials: metrics, reports, resume, NaN guard, downstream."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import Tensor

from trainables.build import build_model, resolve_precision
from trainables.data.augment import normalize, to_float
from trainables.loop import run_trial
from trainables.methods import METHODS, Method, register_method

NUMBERS = (
    "knn_acc",
    "uniformity",
    "probe_acc",
    "ece",
    "alignment",
    "classwise_uniformity",
    "feature_distance",
)


def serialised(states: list[dict]):
    """A ``save`` callback that stores each state as ``torch.save`` bytes, as a checkpoint would."""

    def save(state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        states.append(buf.getvalue())

    return save


def load(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=True)


def test_run_trial__final_metrics_and_one_report_per_epoch(tiny_cfg, digits):
    cfg = tiny_cfg("supervised", **{"optim.epochs": 3, "eval.eval_every": 2})
    reports = []
    final = run_trial(cfg.to_flat(), reports.append, dataset=digits)  # the flat dict Ray passes
    assert 20 < final["knn_acc"] <= 100  # 10 classes: chance is 10
    assert final["uniformity"] > 0
    assert 0 <= final["probe_acc"] <= 100 and 0 <= final["ece"] <= 1
    assert len(final["classwise_uniformity"]) == 10
    assert len(final["feature_distance"]) == 10 and all(len(row) == 10 for row in final["feature_distance"])
    cells = [v for row in final["feature_distance"] for v in row]
    assert all(math.isfinite(v) for v in [*final["classwise_uniformity"], *cells])
    assert math.isfinite(final["alignment"])

    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert math.isfinite(r["loss"]) and r["lr"] >= 0 and r["samples_per_s"] > 0
    assert "knn_acc" not in reports[0]  # eval_every 2: no evaluation after epoch 1
    assert 0 <= reports[1]["knn_acc"] <= 100 and reports[1]["uniformity"] > 0
    assert reports[2]["done"] is True and reports[2]["knn_acc"] == final["knn_acc"]
    assert reports[2]["lr"] < reports[1]["lr"]  # cosine decay


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: the autocast path `auto` takes on native-bf16 hardware
def test_run_trial__resume_from_a_checkpoint_ends_bit_for_bit_like_an_uninterrupted_run(
    tiny_cfg, digits, precision, capsys
):
    # MoCo carries the most state: queue, pointer, shuffle generator, momentum, split BN.
    # Two epochs of 80 images (the 64-key queue still wraps in the first): bf16 is emulated,
    # about 10x slower, on CPUs without AVX512-BF16/AMX.
    cfg = tiny_cfg(
        "moco_v2",
        **{"optim.epochs": 2, "system.precision": precision, "data.train_per_class": 8, "optim.batch_size": 16},
    )
    states, full_reports = [], []
    full = run_trial(cfg, full_reports.append, save=serialised(states), dataset=digits)
    assert [load(s)["epoch"] for s in states] == [1, 2] and full["precision"] == precision

    # Resumed under `auto`, as on another machine: the trial keeps the precision it started in
    # (on any machine one of the two cases resolves `auto` to the other precision).
    resumed_reports = []
    switched = resolve_precision("auto", torch.device("cpu")) != precision
    auto = cfg.replace({"system.precision": "auto"})
    resumed = run_trial(auto, resumed_reports.append, resume=load(states[0]), dataset=digits)
    assert resumed["precision"] == precision
    assert (f"resuming in {precision}, the precision this trial started in" in capsys.readouterr().err) == switched
    for key in NUMBERS:
        assert resumed[key] == full[key], key
    assert [r["loss"] for r in resumed_reports] == [r["loss"] for r in full_reports[1:]]
    assert [r["epoch"] for r in resumed_reports] == [2]

    # Resumed from the last epoch's state (the driver stopped before it took in that epoch): nothing
    # is trained, and the final report still carries that epoch's loss for the driver to record.
    after_end = []
    run_trial(cfg, after_end.append, resume=load(states[1]), dataset=digits)
    assert [(r["epoch"], r["loss"], r["done"]) for r in after_end] == [(2, full_reports[-1]["loss"], True)]


def test_run_trial__final_metrics_are_fp32_whatever_the_trial_trains_in(tiny_cfg, digits):
    """The untrained network (optim.epochs 0) of a bf16 trial and of an fp32 trial is the same, and
    so are its final metrics: they are computed in IEEE fp32 either way. (bf16 features moved
    uniformity by ~3e-4 and the kNN by a few test images.) A trained bf16 trial's initial kNN is
    the fp32 untrained reference's, on an fp32 bank even where eval.bank_dtype asks bf16 per epoch."""
    cfg = tiny_cfg("moco_v2", **{"optim.epochs": 0})
    runs = {
        p: run_trial(cfg.replace({"system.precision": p}), lambda m: None, dataset=digits) for p in ("bf16", "fp32")
    }
    assert runs["bf16"]["precision"] == "bf16" and runs["fp32"]["precision"] == "fp32"
    assert runs["bf16"]["eval_precision"] == runs["fp32"]["eval_precision"] == "ieee-fp32"
    assert 0 < runs["bf16"]["final_eval_s"] <= runs["bf16"]["train_time_s"]  # its price, measured per trial
    for key in ("knn_acc", "knn_acc_study", "uniformity", "probe_acc", "alignment", "intra_distance"):
        assert runs["bf16"][key] == pytest.approx(runs["fp32"][key], rel=1e-5, abs=1e-9), key
    trained = run_trial(
        cfg.replace(
            {"system.precision": "bf16", "optim.epochs": 1, "eval.knn_at_init": True, "eval.bank_dtype": "bf16"}
        ),
        lambda m: None,
        dataset=digits,
    )
    assert trained["knn_acc_init"] == runs["fp32"]["knn_acc"]


def test_run_trial__knn_at_init_is_the_untrained_reference_and_leaves_training_alone(tiny_cfg, digits):
    cfg = tiny_cfg("supervised", **{"optim.epochs": 2, "eval.eval_every": 1, "eval.probe": False})
    plain_reports, gain_reports, states = [], [], []
    plain = run_trial(cfg, plain_reports.append, dataset=digits)
    with_init = cfg.replace({"eval.knn_at_init": True})
    gained = run_trial(with_init, gain_reports.append, save=serialised(states), dataset=digits)
    untrained = run_trial(cfg.replace({"optim.epochs": 0}), lambda m: None, dataset=digits)

    assert gained["knn_acc_init"] == untrained["knn_acc"]  # same seed, same initial network
    assert [r["loss"] for r in gain_reports] == [r["loss"] for r in plain_reports]
    assert gained["knn_acc"] == plain["knn_acc"]
    for r in gain_reports:
        assert r["knn_gain"] == pytest.approx(r["knn_acc"] - untrained["knn_acc"])
    assert "knn_gain" not in plain
    resumed = run_trial(with_init, lambda m: None, resume=load(states[0]), dataset=digits)
    assert resumed["knn_gain"] == gained["knn_gain"]  # the reference survives a restart


def test_run_trial__same_seed_same_numbers_other_seed_other_numbers(tiny_cfg, digits):
    cfg = tiny_cfg("supervised", **{"optim.epochs": 1, "eval.probe": False})
    a, b = (
        run_trial(cfg, lambda m: None, dataset=digits),
        run_trial(cfg, lambda m: None, dataset=digits),
    )
    c = run_trial(cfg.replace({"system.seed": 1}), lambda m: None, dataset=digits)
    assert a["uniformity"] == b["uniformity"] and a["feature_distance"] == b["feature_distance"]
    assert a["uniformity"] != c["uniformity"]


@pytest.fixture
def nan_method():
    """A registered method whose loss turns NaN on its 8th training step (epoch 2 of 6 steps)."""

    @register_method
    class NanAtStep8(Method):
        name = "nan_at_step_8"
        n_views = 1

        def __init__(self, backbone, feature_dim, num_classes, params) -> None:
            super().__init__(backbone, feature_dim, num_classes, params)
            self.calls = 0

        def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
            self.calls += 1
            loss = self.backbone(views[0]).pow(2).mean()
            return {"loss": loss * float("nan") if self.calls == 8 else loss}

    yield NanAtStep8.name
    METHODS.pop(NanAtStep8.name)


def test_run_trial__non_finite_loss_raises_naming_epoch_and_step(tiny_cfg, digits, nan_method):
    cfg = tiny_cfg(nan_method, **{"optim.epochs": 3})  # 200 images / batch 32 = 6 steps per epoch
    reports = []
    with pytest.raises(FloatingPointError, match="non-finite loss nan at epoch 2 step 8"):
        run_trial(cfg, reports.append, dataset=digits)
    assert [r["epoch"] for r in reports] == [1]


def test_run_trial__finite_check_every_n_steps_names_the_window(tiny_cfg, digits, nan_method):
    cfg = tiny_cfg(nan_method, **{"optim.epochs": 3, "system.finite_check_every": 4})  # checks at steps 4, 6 | 10, 12
    reports = []
    with pytest.raises(FloatingPointError, match="non-finite loss nan at epoch 2 steps 7-10"):
        run_trial(cfg, reports.append, dataset=digits)
    assert [r["epoch"] for r in reports] == [1]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_run_trial__diverging_lr_raises_floating_point_error(tiny_cfg, digits, precision):
    # lr 1e12: the loss overflows within the first epoch in both precisions (at lr 1e6 an fp32
    # loss stayed finite and only the features overflowed: the next test's case).
    cfg = tiny_cfg(
        "supervised",
        **{"optim.lr": 1e12, "optim.epochs": 1, "optim.warmup_fraction": 0.0, "system.precision": precision},
    )
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at epoch 1 step \d+"):
        run_trial(cfg, lambda m: None, dataset=digits)


@pytest.fixture
def inf_features_method():
    """A registered method that trains normally but whose features are infinite at evaluation."""

    @register_method
    class InfFeatures(Method):
        name = "inf_features"
        n_views = 1

        def training_step(self, views: list[Tensor], labels: Tensor) -> dict[str, Tensor]:
            return {"loss": self.backbone(views[0]).pow(2).mean()}

        def embed(self, x: Tensor) -> Tensor:
            return self.backbone(x) * float("inf")

    yield InfFeatures.name
    METHODS.pop(InfFeatures.name)


def test_run_trial__non_finite_features_raise_before_the_metrics(tiny_cfg, digits, inf_features_method):
    cfg = tiny_cfg(inf_features_method, **{"optim.epochs": 2, "eval.eval_every": 1})
    reports = []
    with pytest.raises(FloatingPointError, match="non-finite training-split features at the evaluation after epoch 1"):
        run_trial(cfg, reports.append, dataset=digits)
    assert reports == []  # nothing reported from a diverged network


def test_run_trial__batch_larger_than_the_split_raises(tiny_cfg, digits):
    with pytest.raises(ValueError, match=r"optim\.batch_size 512 is larger than the 200 training images"):
        run_trial(tiny_cfg("supervised", **{"optim.batch_size": 512}), lambda m: None, dataset=digits)


def _embeddings(cfg, state: dict | None, images: Tensor) -> Tensor:
    """Backbone features of uint8 ``images`` from ``cfg``'s model, with a trial's state if given."""
    method = build_model(cfg.resolved(), 10, torch.device("cpu"))
    if state is not None:
        method.load_state_dict(state["method"])
    x = normalize(to_float(images), (0.5,) * 3, (0.25,) * 3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return method.eval().embed(x)


@pytest.mark.slow
def test_run_trial__init_checkpoint_loads_the_trained_backbone(tiny_cfg, digits, tmp_path):
    """The downstream setting: start from a pretraining checkpoint, evaluate on corrupted data."""
    pre_cfg = tiny_cfg("moco_v2", **{"optim.epochs": 1})
    states = []
    pretrained = run_trial(pre_cfg, lambda m: None, save=serialised(states), dataset=digits)
    path = tmp_path / "pretrained.pt"
    path.write_bytes(states[-1])
    images = digits.test.images[:16]
    trained = _embeddings(pre_cfg, load(states[-1]), images)
    assert not torch.equal(trained, _embeddings(pre_cfg, None, images))  # training moved it

    down = tiny_cfg("supervised", **{"model.init_checkpoint": str(path), "optim.epochs": 0})
    assert torch.equal(_embeddings(down, None, images), trained)
    same = run_trial(down, lambda m: None, dataset=digits)  # epochs 0: evaluate what was loaded
    assert same["knn_acc"] == pretrained["knn_acc"]
    assert same["uniformity"] == pretrained["uniformity"]

    # A frozen backbone stays the pretrained one (BN statistics included) while the head trains.
    frozen = down.replace({"optim.epochs": 1, "optim.train_backbone": False})
    states = []
    clean = run_trial(frozen, lambda m: None, save=serialised(states), dataset=digits)
    state = load(states[-1])
    assert torch.equal(_embeddings(frozen, state, images), trained)
    init = build_model(frozen.resolved(), 10, torch.device("cpu")).classifier.weight
    assert not torch.equal(state["method"]["classifier.weight"], init)

    corrupted = run_trial(frozen.replace({"data.eval_corruption": "glo_4"}), lambda m: None, dataset=digits)
    # Same backbone, so a different uniformity can only come from the glo_4-shuffled images.
    assert corrupted["uniformity"] != clean["uniformity"]
    assert 0 <= corrupted["knn_acc"] <= 100


def test_run_trial__eval_corruption_is_applied_to_the_evaluation_sets(tiny_cfg, digits):
    cfg = tiny_cfg("supervised", **{"optim.epochs": 0, "eval.probe": False})
    clean = run_trial(cfg, lambda m: None, dataset=digits)
    shuffled = run_trial(cfg.replace({"data.eval_corruption": "glo_4"}), lambda m: None, dataset=digits)
    assert shuffled["uniformity"] != clean["uniformity"]
    assert run_trial(cfg, lambda m: None, dataset=digits)["uniformity"] == clean["uniformity"]


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.slow  # ~20 s of CPU time (dynamo + AOT autograd for three graphs); 58 s on a shared core
def test_run_trial__compiled_encoders_compile_once_per_trial_and_train_like_eager(tiny_cfg, digits, monkeypatch):
    """system.compile on MoCo-v2 (backbone and key encoder), with AOT autograd's decompositions (what
    inductor compiles; its CPU code generation alone takes minutes on one core): no graph is compiled
    after the first epoch's training and evaluation, none for the final evaluation's padded batches,
    and a resumed trial compiles no more than a fresh one. Tolerance against eager fp32: 1e-4
    relative on the per-epoch losses, 2 points of kNN accuracy (100 test images)."""
    import trainables.build

    torch._dynamo.reset()
    monkeypatch.setattr(trainables.build, "COMPILE_BACKEND", "aot_eager")
    flat = {
        "data.image_size": 16,
        "model.width": 0.0625,
        "optim.batch_size": 8,
        "optim.epochs": 2,
        "eval.batch_size": 64,
        "method.bn_splits": 1,
        "system.precision": "fp32",
    }
    eager_reports, reports, graphs, states = [], [], [], []
    eager = run_trial(tiny_cfg("moco_v2", **flat), eager_reports.append, dataset=digits)

    def report(m: dict) -> None:
        reports.append(m)
        graphs.append(_graphs())

    compiled = run_trial(
        tiny_cfg("moco_v2", **flat, **{"system.compile": True}), report, dataset=digits, save=serialised(states)
    )
    assert graphs[0] >= 3 and graphs[-1] == graphs[0]  # train, key pass (no grad), eval: then nothing new
    torch.testing.assert_close([r["loss"] for r in reports], [r["loss"] for r in eager_reports], rtol=1e-4, atol=0)
    assert abs(compiled["knn_acc"] - eager["knn_acc"]) <= 2
    before = _graphs()
    run_trial(
        tiny_cfg("moco_v2", **flat, **{"system.compile": True}), lambda m: None, dataset=digits, resume=load(states[0])
    )
    assert _graphs() - before <= graphs[0]


def test_run_trial__cheap_levers_train_and_evaluate_like_the_defaults(tiny_cfg, digits):
    """foreach SGD, foreach EMA, a loss check every 4 steps, evaluation batches of 64 with the metrics
    on the training device, against the defaults (fp32): losses within 1e-5 relative; kNN, the
    study's kNN and the probe within 1 point, one of 100 test images (all three equal when measured).
    The bf16 kNN bank is held to fp32 in tests/trainables/evaluation/test_protocol.py: on this near-chance tiny
    model it moved kNN by 1-3 of 100 images, too close to ties for a trial-level tolerance."""
    flat = {"optim.epochs": 2, "method.bn_splits": 1, "system.precision": "fp32"}
    levers = {
        "system.optimizer_impl": "foreach",
        "system.foreach_ema": True,
        "system.finite_check_every": 4,
        "eval.batch_size": 64,
        "eval.on_device": True,
    }
    ref_reports, reports = [], []
    ref = run_trial(tiny_cfg("moco_v2", **flat), ref_reports.append, dataset=digits)
    fast = run_trial(tiny_cfg("moco_v2", **flat, **levers), reports.append, dataset=digits)
    torch.testing.assert_close([r["loss"] for r in reports], [r["loss"] for r in ref_reports], rtol=1e-5, atol=0)
    for key in ("knn_acc", "knn_acc_study", "probe_acc"):
        assert fast[key] == pytest.approx(ref[key], abs=1.0), key


def test_run_trial__input_size_a_tiny_vit_trains_and_evaluates_16px_data_resized_to_32(tiny_cfg, monkeypatch):
    """Training views (the study recipe, resampled in its crop), kNN features and the fine-tune's
    pad-crop views and test batches all reach the network at ``data.input_size``, never the stored 16 px."""
    from trainables import loop

    sides, real = set(), loop.build_model

    def spied(*args, **kwargs):
        method = real(*args, **kwargs)  # the fine-tune's deep copy keeps the hook
        method.backbone.register_forward_pre_hook(lambda module, inputs: sides.add(tuple(inputs[0].shape[-2:])))
        return method

    monkeypatch.setattr(loop, "build_model", spied)
    vit = {"model.backbone": "vit_tiny_patch16_224", "model.small_stem": False, "model.width": 0.0625}
    cfg = tiny_cfg(
        "supervised",
        **vit,
        **{"model.img_size": 32, "model.patch_size": 8, "data.image_size": 16, "data.input_size": 32},
        **{"data.corruption": "glo_4", "data.train_per_class": 4, "data.test_per_class": 2, "optim.batch_size": 20},
        **{"optim.epochs": 1, "eval.eval_every": 0, "eval.probe": False, "eval.knn_k": 5},
        **{"eval.finetune": True, "eval.finetune_epochs": 1, "eval.finetune_batch_size": 20},
    )
    reports = []
    final = run_trial(cfg, reports.append)
    assert sides == {(32, 32)} and final["image_size"] == 16
    assert math.isfinite(reports[-1]["loss"]) and 0 <= final["knn_acc"] <= 100 and 0 <= final["finetune_acc"] <= 100
    with pytest.raises(ValueError, match=r"data\.input_size 24 is invalid .*; valid: data\.input_size 32, or model"):
        run_trial(cfg.replace({"data.input_size": 24}), reports.append)
