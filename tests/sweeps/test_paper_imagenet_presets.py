"""The ImageNet-scale presets (issue 27): what they resolve to, and their --smoke-test through real
Ray Tune and MLflow on a tiny ImageFolder of odd-sized JPEGs (``tiny_imagefolder``, conftest.py; the
downstream preset's smoke test, on the same folder, is in test_presets.py)."""

from __future__ import annotations

import pytest

from sweeps.launch import main, prepare
from sweeps.options import CONFIG_DIR
from sweeps.paper_table1 import SWEEP as TABLE1
from tests.sweeps.conftest import runs


def plan_of(config: str, storage, dataset, *extra: str):
    plan, _ = prepare(
        TABLE1,
        [
            "--config",
            str(CONFIG_DIR / config),
            "--dataset",
            f"imagefolder:{dataset}",
            "--storage-path",
            str(storage),
            "--dry-run",
            *extra,
        ],
    )
    return plan


def first_cell(plan, method: str) -> dict:
    return next(c for c in plan.cells if c["method"] == method and c["optim.epochs"] > 0)


def test_imagenet100_preset__resolves_to_the_studys_in100_scripts(storage, tiny_imagefolder):
    plan = plan_of("paper_imagenet100.yaml", storage, tiny_imagefolder)
    assert plan.opts["resources"]["gpu"] == 4  # --gpus 0,1,2,3
    moco, sup = first_cell(plan, "moco_v2"), first_cell(plan, "supervised")
    for cell in (moco, sup):
        assert (cell["data.image_size"], cell["data.crop_size"], cell["data.eval_crop_size"]) == (256, 224, 224)
        assert cell["data.normalization"] == "imagenet"  # solo-learn's ImagenetTransform constants
        assert (cell["model.small_stem"], cell["model.zero_init_last"], cell["optim.momentum"]) == (False, False, 0.9)
    assert (moco["optim.batch_size"], moco["optim.lr"], moco["optim.weight_decay"], moco["optim.epochs"]) == (
        512,
        0.3,
        1.0e-4,
        200,
    )
    assert (moco["method.queue_size"], moco["method.temperature"], moco["method.momentum_final"]) == (65536, 0.2, 0.999)
    assert moco["data.augmentation"] == "moco_v2_imagenet" and sup["data.augmentation"] == "study_imagenet"
    assert (sup["optim.batch_size"], sup["optim.lr"], sup["optim.weight_decay"], sup["optim.epochs"]) == (
        1024,
        0.4,
        3.0e-5,
        30,
    )
    corruptions = {c["data.corruption"] for c in plan.cells}
    assert {"ori", "glo_4", "loc_64", "gam_0.2", "gam_5"} <= corruptions and len(corruptions) == 9


def test_imagenet_vit_preset__resolves_to_the_studys_vit_s_scripts(storage, tiny_imagefolder):
    plan = plan_of("paper_imagenet_vit.yaml", storage, tiny_imagefolder)
    assert plan.opts["resources"]["gpu"] == 8  # --gpus 0,...,7
    moco, sup = first_cell(plan, "moco_v3"), first_cell(plan, "supervised")
    for cell in (moco, sup):
        assert cell["model.backbone"] == "vit_small_patch16_224" and cell["optim.optimizer"] == "adamw"
        assert (cell["optim.lr"], cell["optim.batch_size"], cell["optim.weight_decay"], cell["optim.epochs"]) == (
            3.0e-4,
            1024,
            1.0e-5,
            200,
        )
        assert (cell["data.image_size"], cell["data.crop_size"], cell["data.eval_crop_size"]) == (256, 224, 224)
        assert cell["data.normalization"] == "imagenet"  # solo-learn's ImagenetTransform constants
    assert (moco["method.proj_hidden"], moco["method.proj_dim"], moco["method.pred_hidden"]) == (4096, 256, 4096)
    assert (moco["method.temperature"], moco["method.momentum_base"], moco["method.momentum_final"]) == (0.2, 0.99, 1.0)
    assert {c["data.corruption"] for c in plan.cells} == {"ori", "glo_4", "loc_64"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "methods", "expected"),
    [  # the JPEGs stream, as ImageNet's do; the ViT preset trains a tiny ViT
        ("paper_imagenet100.yaml", {"supervised", "moco_v2"}, {"data.crop_size": "28", "data.streaming": "true"}),
        ("paper_imagenet_vit.yaml", {"supervised", "moco_v3"}, {"model.backbone": "vit_tiny_patch16_224"}),
    ],
)
def test_imagenet_presets__smoke_test_runs_every_trial_on_cpu(
    config, methods, expected, storage, tiny_imagefolder, ray_shutdown, capsys
):
    args = ["--config", str(CONFIG_DIR / config), "--smoke-test", "--experiment", "smoke"]
    code = main(
        TABLE1, [*args, "--dataset", f"imagefolder:{tiny_imagefolder}", "--storage-path", str(storage), "--no-report"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    _, parents, children = runs(storage, "smoke")
    assert len(parents) == 1 and len(children) == 4  # 2 methods x {ori, one corruption}
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.params["method"] for c in children} == methods
    for key, value in expected.items():
        assert {c.data.params[key] for c in children} == {value}, key
    assert all(0 <= c.data.metrics["knn_acc"] <= 100 for c in children)
    assert "Relative accuracy drop vs ori" in out
