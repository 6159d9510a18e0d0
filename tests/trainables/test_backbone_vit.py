"""ViT backbones through ``build_backbone``, and the ResNet-minded code around them (memory format,
split BN, optimizer groups, compile, the input-size check) behaving sensibly with one."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from trainables.backbone import build_backbone, is_vit, split_batchnorm
from trainables.build import build_model, check_input_size, compile_encoders
from trainables.config import TrialConfig
from trainables.memory_format import CONTIGUOUS, choose
from trainables.optim import build_optimizer

TINY = {"small_stem": False, "width": 0.0625, "img_size": 16, "patch_size": 4}  # 12-d, 4 x 4 tokens
TINY_FLAT = {
    "model.backbone": "vit_tiny_patch16_224",
    "model.small_stem": False,
    "model.width": 0.0625,
    "model.img_size": 16,
    "model.patch_size": 4,
}


def _tiny_vit(**overrides):
    return build_backbone("vit_tiny_patch16_224", **{**TINY, **overrides})


def test_build_backbone__vit_gives_the_final_cls_token():
    torch.manual_seed(0)
    model, dim = _tiny_vit()
    assert isinstance(model, VisionTransformer) and is_vit(model) and dim == 12
    assert model.patch_embed.grid_size == (4, 4) and model.pos_embed.shape == (1, 1 + 16, 12)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        feats = model.eval()(x)
        tokens = model.forward_features(x)  # (B, 1 + N, D), after the final LayerNorm
    assert feats.shape == (3, 12)
    torch.testing.assert_close(feats, tokens[:, 0])


@pytest.mark.parametrize("name, dim", [("vit_small_patch16_224", 384), ("vit_base_patch16_224", 768)])
def test_build_backbone__paper_vits_at_224_px(name, dim):
    model, feature_dim = build_backbone(name, small_stem=False)
    assert feature_dim == dim == model.embed_dim
    assert model.patch_embed.img_size == (224, 224) and model.patch_embed.patch_size == (16, 16)
    assert model.head.__class__ is torch.nn.Identity  # num_classes=0: no classifier


@pytest.mark.parametrize("width, dim", [(0.0625, 12), (0.125, 24), (0.1, 18), (1.0, 192)])
def test_build_backbone__vit_width_scales_the_embedding_to_a_multiple_of_the_heads(width, dim):
    model, feature_dim = _tiny_vit(width=width)
    heads = model.blocks[0].attn.num_heads
    assert feature_dim == dim and dim % heads == 0 and heads == 3
    assert model.blocks[0].mlp.fc1.out_features == 4 * dim  # the MLP keeps its ratio


def test_build_backbone__small_stem_on_a_vit_raises_naming_value_and_choice():
    with pytest.raises(ValueError) as err:
        build_backbone("vit_tiny_patch16_224", small_stem=True)
    text = str(err.value)
    assert "\n" not in text and "model.small_stem True" in text and "valid: false" in text


@pytest.mark.parametrize(
    "name, kwargs, words",
    [
        ("resnet18", {"patch_size": 4}, ("model.patch_size 4", "valid: null")),
        ("resnet18", {"img_size": 32}, ("model.img_size 32", "valid: null")),
        ("vit_tiny_patch16_224", {"small_stem": False, "img_size": 30, "patch_size": 4}, ("30", "divisor")),
        ("vit_tiny_patch16_224", {"small_stem": False, "width": 0.0}, ("width 0.0", "positive")),
    ],
)
def test_build_backbone__bad_vit_settings_raise_one_line(name, kwargs, words):
    with pytest.raises(ValueError) as err:
        build_backbone(name, **kwargs)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_build_backbone__zero_init_last_and_stem_padding_change_nothing_in_a_vit():
    states = []
    for kwargs in ({}, {"zero_init_last": False, "stem_padding": 2}):
        torch.manual_seed(0)
        states.append(_tiny_vit(**kwargs)[0].state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_build_backbone__resnet_unchanged_by_the_vit_path():
    """The ResNet branch still builds timm's model with the stage channels and the small stem."""
    torch.manual_seed(0)
    ours, _ = build_backbone("resnet18", width=0.125, small_stem=False, zero_init_last=False)
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", num_classes=0, channels=(8, 16, 32, 64), zero_init_last=False)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True))


def test_split_batchnorm__leaves_a_vit_as_it_is():
    torch.manual_seed(0)
    model, _ = _tiny_vit()
    x = torch.randn(4, 3, 16, 16)
    before = model.eval()(x)
    kinds = [type(m) for m in model.modules()]
    split_batchnorm(model, 2)
    assert [type(m) for m in model.modules()] == kinds  # LayerNorms only: nothing to split
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_choose__a_vit_trains_contiguous_on_cpu_without_a_canary(monkeypatch):
    from trainables import memory_format

    monkeypatch.setattr(memory_format, "canary", lambda shape: pytest.fail("no canary for a ViT"))
    cfg = TrialConfig.from_flat({"method": "supervised", **TINY_FLAT}).resolved()
    chosen = choose(cfg, torch.device("cpu"), (16, 16))
    assert chosen["memory_format"] == CONTIGUOUS and "ViT" in chosen["memory_format_reason"]


def test_build_model__a_channels_last_vit_computes_what_a_contiguous_one_does():
    cfg = TrialConfig.from_flat({"method": "supervised", **TINY_FLAT}).resolved()
    plain = build_model(cfg.replace({"system.channels_last": False}), 10, torch.device("cpu")).eval()
    cl = build_model(cfg.replace({"system.channels_last": True}), 10, torch.device("cpu")).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(cl.embed(x.contiguous(memory_format=torch.channels_last)), plain.embed(x))


def test_build_optimizer__vit_position_embedding_class_token_and_norms_undecayed():
    model, _ = _tiny_vit()
    opt = build_optimizer(model, "lars", 0.1, 1e-4, 0.9, exclude_bias_norm=True)
    decayed, flat = (set(map(id, g["params"])) for g in opt.param_groups)
    names = {id(p): n for n, p in model.named_parameters()}
    flat_names = {names[i] for i in flat}
    assert {"pos_embed", "cls_token", "norm.weight", "blocks.0.norm1.bias", "blocks.0.attn.qkv.bias"} <= flat_names
    assert {names[i] for i in decayed} == {n for n, p in model.named_parameters() if p.ndim >= 2} - {
        "pos_embed",
        "cls_token",
    }
    assert opt.param_groups[1]["weight_decay"] == 0 and opt.param_groups[1]["lars"] is False


def test_build_optimizer__resnet_groups_unchanged_by_no_weight_decay_names():
    model, _ = build_backbone("resnet18", width=0.125)
    opt = build_optimizer(model, "sgd", 0.1, 1e-4, 0.9, exclude_bias_norm=True)
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in model.parameters() if p.ndim <= 1}


def test_build_optimizer__adamw_with_beta1_from_momentum():
    model, _ = _tiny_vit()
    opt = build_optimizer(model, "adamw", 1e-3, 0.05, 0.8, exclude_bias_norm=True)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_compile_encoders__finds_a_vit_methods_encoders():
    cfg = TrialConfig.from_flat({"method": "moco_v3", **TINY_FLAT, "method.proj_hidden": 16}).resolved()
    method = build_model(cfg, 10, torch.device("cpu"))
    import trainables.build as build

    names = []
    original = build.COMPILE_BACKEND
    try:
        build.COMPILE_BACKEND = "eager"
        names = compile_encoders(method)
    finally:
        build.COMPILE_BACKEND = original
    assert names == ["backbone", "key_backbone"]


def test_check_input_size__a_vit_refuses_images_of_another_size_in_one_line():
    cfg = TrialConfig.from_flat({"method": "supervised", **TINY_FLAT})
    check_input_size(cfg, (16, 16))
    with pytest.raises(ValueError) as err:
        check_input_size(cfg, (32, 32))
    assert (
        "\n" not in str(err.value)
        and "model.img_size 16" in str(err.value)
        and "valid: model.img_size 32" in str(err.value)
    )
    with pytest.raises(ValueError, match=r"valid: model\.img_size 32"):  # None: the model's own 224
        check_input_size(cfg.replace({"model.img_size": None, "model.patch_size": None}), (32, 32))
    check_input_size(TrialConfig(), (32, 32))  # a ResNet takes any size
    check_input_size(cfg.replace({"model.backbone": "vit_nonexistent"}), (32, 32))  # build_backbone says why


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "tagged, kwargs",
    [
        ("resnet18.tv_in1k", {"small_stem": False}),
        ("vit_small_patch16_224.dino", {"small_stem": False, "width": 0.0625}),
    ],
)
def test_build_backbone__a_timm_pretrained_tag_passes_through_without_a_download(monkeypatch, tagged, kwargs):
    """The tag reaches ``timm.create_model`` (which picks that tag's weights when pretrained); the
    architecture is the untagged name's. ``pretrained=True`` is recorded, then built without weights."""
    untagged, _ = build_backbone(tagged.partition(".")[0], **kwargs)
    tagged_model, _ = build_backbone(tagged, **kwargs)
    assert _shapes(tagged_model) == _shapes(untagged)
    calls, create = [], timm.create_model

    def offline(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    build_backbone(tagged, pretrained=True, **kwargs)
    assert (tagged, True) in calls


def test_build_backbone__an_unknown_pretrained_tag_lists_timms_tags():
    with pytest.raises(ValueError, match=r"pretrained tag 'nope' of 'resnet18' is unknown to timm; valid: .*tv_in1k"):
        build_backbone("resnet18.nope", small_stem=False)
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet7\.tv_in1k'"):
        build_backbone("resnet7.tv_in1k")


def test_check_input_size__data_input_size_is_what_a_tagged_vit_must_take():
    cfg = TrialConfig.from_flat(
        {"method": "supervised", **TINY_FLAT, "model.backbone": "vit_tiny_patch16_224.augreg_in21k"}
    )
    check_input_size(cfg, (16, 16))
    with pytest.raises(ValueError, match=r"model\.img_size 16 gives .* valid: model\.img_size 32"):
        check_input_size(cfg, (32, 32))  # a tagged name is checked too
    wide = cfg.replace({"data.input_size": 32})
    with pytest.raises(
        ValueError, match=r"^data\.input_size 32 is invalid for .*; valid: data\.input_size 16, or model\.img_size 32$"
    ):
        check_input_size(wide, (32, 32))
