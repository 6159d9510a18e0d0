"""Backbones: small stem, width, error messages; SplitBatchNorm2d against per-split BN by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.backbone import SplitBatchNorm2d, build_backbone, split_batchnorm


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_build_backbone__small_stem_is_3x3_stride1_without_maxpool():
    model, dim = build_backbone("resnet18", small_stem=True, width=0.25)
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == (
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert isinstance(model.maxpool, nn.Identity)
    assert dim == 128
    seen = []
    model.layer1.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 128)
    assert seen[0][-2:] == (32, 32)  # the first stage keeps the full 32 px resolution


def test_build_backbone__imagenet_stem_when_small_stem_off():
    model, _ = build_backbone("resnet18", small_stem=False, width=0.25)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)


def test_build_backbone__deep_stem_variant_gets_stride_1_too():
    model, dim = build_backbone("resnet18d", small_stem=True, width=0.125)
    assert model.conv1[0].stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    seen = []
    model.layer1.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, dim)
    assert seen[0][-2:] == (32, 32)


def test_build_backbone__resnet50_bottleneck_features():
    model, dim = build_backbone("resnet50", small_stem=True, width=0.125)
    assert dim == 4 * 64  # bottleneck expansion 4 on 512 * 0.125
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, dim)


@pytest.mark.parametrize("width, dim", [(0.125, 64), (0.5, 256), (1.0, 512)])
def test_build_backbone__width_scales_stage_channels(width, dim):
    model, feature_dim = build_backbone("resnet18", width=width)
    convs = _convs(model)
    stages = [convs[f"layer{i}.0.conv1"].out_channels for i in range(1, 5)]
    assert stages == [round(c * width) for c in (64, 128, 256, 512)]
    assert feature_dim == dim


@pytest.mark.parametrize("name", ["vit_small_patch17_224", "resnet_18", "convnext_tiny"])
def test_build_backbone__unknown_name_lists_valid_resnets_and_vits(name):
    with pytest.raises(ValueError) as err:
        build_backbone(name)
    text = str(err.value)
    assert "\n" not in text and repr(name) in text
    assert all(n in text for n in ("resnet18", "resnet50", "vit_tiny_patch16_224", "vit_small_patch16_224"))


@pytest.mark.parametrize("width", [0.0, -0.5])
def test_build_backbone__non_positive_width_raises_with_choices(width):
    with pytest.raises(ValueError) as err:
        build_backbone("resnet18", width=width)
    assert str(width) in str(err.value) and "0.25" in str(err.value)


def _split_bn_pair(channels: int = 4, splits: int = 4) -> tuple[SplitBatchNorm2d, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    bn = SplitBatchNorm2d(channels, splits)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    # Per-sample offsets make every split's statistics differ.
    x = torch.randn(16, channels, 5, 5, generator=g) * 2 + torch.arange(16.0).view(16, 1, 1, 1)
    return bn, x, torch.randn(16, channels, 5, 5, generator=g)


@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batchnorm__training_equals_bn_on_each_interleaved_split(channels_last):
    bn, x, _ = _split_bn_pair()
    s = bn.num_splits
    means, vars_ = [], []
    expected = torch.empty_like(x)
    for r in range(s):  # split r holds samples r, r + s, r + 2s, ... (sample i -> split i % s)
        rm, rv = bn.running_mean.clone(), bn.running_var.clone()
        expected[r::s] = F.batch_norm(x[r::s], rm, rv, bn.weight, bn.bias, True, bn.momentum, bn.eps)
        means.append(rm)
        vars_.append(rv)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = bn.train()(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # the layout is kept, so the next convolution needs no conversion
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(vars_).mean(0))
    # and it is not plain BN over the whole batch
    assert not torch.allclose(out, F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.1, bn.eps), atol=1e-3)


def test_split_batchnorm__eval_mode_is_plain_batchnorm():
    split, x, _ = _split_bn_pair()
    plain = nn.BatchNorm2d(split.num_features)
    plain.load_state_dict(split.state_dict())
    torch.testing.assert_close(split.eval()(x), plain.eval()(x))


def test_split_batchnorm__batch_not_divisible_raises():
    bn, x, _ = _split_bn_pair()
    with pytest.raises(ValueError, match="not divisible by bn_splits 4"):
        bn.train()(x[:10])


def test_split_batchnorm__gradients_match_per_split_bn():
    bn, x, grad_out = _split_bn_pair()
    s = bn.num_splits
    x1 = x.clone().requires_grad_(True)
    bn.train()(x1).backward(grad_out)
    weight, bias = (
        bn.weight.detach().clone().requires_grad_(True),
        bn.bias.detach().clone().requires_grad_(True),
    )
    x2 = x.clone().requires_grad_(True)
    out = torch.empty_like(x)
    for r in range(s):
        out[r::s] = F.batch_norm(x2[r::s], None, None, weight, bias, True, 0.0, bn.eps)
    out.backward(grad_out)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.weight.grad, weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.bias.grad, bias.grad, rtol=1e-4, atol=1e-5)


def test_split_batchnorm__conversion_keeps_state_and_reaches_every_bn():
    model, _ = build_backbone("resnet18", width=0.125)
    with torch.no_grad():
        model.bn1.running_mean.fill_(0.5)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    split_batchnorm(model, 4)
    splits = [m for m in model.modules() if isinstance(m, SplitBatchNorm2d)]
    assert len(splits) == n_bn > 0 and all(m.num_splits == 4 for m in splits)
    assert torch.all(model.bn1.running_mean == 0.5)


def test_build_backbone__last_bn_of_each_block_is_zeroed_unless_turned_off():
    def last_bn_weights(model):
        return [block.bn2.weight for stage in (model.layer1, model.layer2) for block in stage]

    zeroed, _ = build_backbone("resnet18", width=0.125)  # timm's default
    torchvision_like, _ = build_backbone("resnet18", width=0.125, zero_init_last=False)  # the study's init
    assert all(bool((w == 0).all()) for w in last_bn_weights(zeroed))
    assert all(bool((w != 0).all()) for w in last_bn_weights(torchvision_like))


def test_build_backbone__stem_padding_2_gives_the_studys_34px_maps():
    # solo-learn's CIFAR stem: nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2), no max-pool
    net, _ = build_backbone("resnet18", small_stem=True, width=0.125, stem_padding=2)
    assert net.conv1.padding == (2, 2)
    assert net.act1(net.bn1(net.conv1(torch.zeros(1, 3, 32, 32)))).shape[-2:] == (34, 34)
    default, _ = build_backbone("resnet18", small_stem=True, width=0.125)
    assert default.conv1(torch.zeros(1, 3, 32, 32)).shape[-2:] == (32, 32)


def test_build_backbone__pretrained_file_loads_local_timm_weights(tmp_path):
    """A ResNet at 1/8 width and a ViT resized to 32 px images get a saved state dict's weights
    (timm adapts the ViT's patch and position embeddings), offline."""
    torch.manual_seed(0)
    resnet, _ = build_backbone("resnet18", small_stem=False, width=0.125)
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    torch.manual_seed(1)
    loaded, _ = build_backbone(
        "resnet18", small_stem=False, width=0.125, pretrained=True, pretrained_file=str(tmp_path / "resnet.pth")
    )
    assert all(
        torch.equal(a, b) for a, b in zip(resnet.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    vit, _ = build_backbone("vit_tiny_patch16_224", small_stem=False)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    small, dim = build_backbone(
        "vit_tiny_patch16_224", small_stem=False, img_size=32, patch_size=4, pretrained=True,
        pretrained_file=str(tmp_path / "vit.pth"),
    )  # fmt: skip
    assert dim == 192 and small.pos_embed.shape == (1, 1 + 8 * 8, 192)
    assert torch.equal(small.blocks[3].mlp.fc1.weight, vit.blocks[3].mlp.fc1.weight)
    with pytest.raises(ValueError, match=r"^model.pretrained_file '/nowhere.pth' does not exist; valid: a saved"):
        build_backbone("resnet18", pretrained=True, pretrained_file="/nowhere.pth")


def test_config__pretrained_file_without_pretrained_is_refused_in_one_line():
    from trainables.config import TrialConfig

    with pytest.raises(
        ValueError, match=r"^model.pretrained_file '/w.pth' is set but model.pretrained is false; valid"
    ):
        TrialConfig.from_flat({"method": "supervised", "model.pretrained_file": "/w.pth"}).resolved()
