"""Backbones: a timm ResNet or ViT with ``num_classes=0`` (pooled features out).

ResNets: ``small_stem`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv and no
pool, the usual choice for 32-96 px images (moco CIFAR demo, solo-learn). It is an explicit
option, never inferred from a dataset name. ``width`` scales timm's per-stage ``channels``.

ViTs (any timm ``vit_*`` name built by timm's ``VisionTransformer``): the features are the final
CLS token (timm's ``global_pool="token"``, after the last LayerNorm). Small images take
``img_size`` and ``patch_size`` (timm's own arguments), e.g. ``vit_tiny_patch16_224`` with
``img_size=32, patch_size=4``: 8 x 8 tokens of 4 x 4 px, as CIFAR ViTs usually have. ``width``
scales the embedding width (rounded to a multiple of the head count, the MLP keeps its ratio).
``small_stem`` is a ResNet stem and raises for a ViT; ``stem_padding`` (used only with the small
stem) and ``zero_init_last`` (ViT blocks have no BN to zero) do nothing there.

A name may carry timm's pretrained tag (``vit_small_patch16_224.dino``, ``resnet18.tv_in1k``): it
passes through to ``timm.create_model``, so ``pretrained=True`` loads that tag's weights; the
architecture is the untagged name's, and an unknown tag is refused from timm's local list.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

RESNET_CHANNELS = (64, 128, 256, 512)
# The names listed in errors: timm's plain ViTs (every other vit_* that timm builds as a
# VisionTransformer is accepted too).
_LISTED_VIT = re.compile(r"vit_(tiny|small|base|large)_patch\d+_224")


def valid_backbones() -> list[str]:
    """The backbone names an error lists: timm's plain ResNets and ViTs (more are accepted)."""
    resnets = [m for m in timm.list_models("resnet*") if m.count("_") == 0]
    return resnets + [m for m in timm.list_models("vit_*") if _LISTED_VIT.fullmatch(m)]


def architecture(name: str) -> str:
    """``name`` without its timm pretrained tag: ``resnet18.tv_in1k`` -> ``resnet18``."""
    return name.partition(".")[0]


def check_tag(name: str) -> None:
    """Refuse a ``name.tag`` whose tag timm does not know for that architecture (timm's own pretrained
    list, read locally: nothing is downloaded), listing the valid ones.

    Raises:
        ValueError: one line, e.g. ``pretrained tag 'x' of 'resnet18' is unknown; valid: a1_in1k, ...``.
    """
    arch, dot, tag = name.partition(".")
    if not dot:
        return
    tags = [m.partition(".")[2] for m in timm.list_models(arch, pretrained=True)]
    if tag not in tags:
        raise ValueError(
            f"pretrained tag {tag!r} of {arch!r} is unknown to timm; valid: {', '.join(tags) or 'none (no weights)'}"
        )


def pretrained_mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std in [0, 1] units that timm's weights for ``name`` (with its tag, or
    timm's default tag) were trained with, from timm's local config: nothing is downloaded."""
    check_tag(name)
    cfg = timm.models.get_pretrained_cfg(name) if timm.list_models(architecture(name), pretrained=True) else None
    if cfg is None:
        raise ValueError(
            f"data.normalization 'pretrained' is invalid for model.backbone {name!r}: timm has no weights for it; "
            "valid: dataset, imagenet"
        )
    return tuple(cfg.mean), tuple(cfg.std)


def is_vit(name_or_module: str | nn.Module) -> bool:
    """Whether a backbone name (``vit_*``) or a built backbone is a ViT."""
    if isinstance(name_or_module, str):
        return name_or_module.startswith("vit_")
    return isinstance(name_or_module, VisionTransformer)


def build_backbone(
    name: str = "resnet18",
    *,
    small_stem: bool = True,
    width: float = 1.0,
    pretrained: bool = False,
    zero_init_last: bool = True,
    stem_padding: int = 1,
    img_size: int | None = None,
    patch_size: int | None = None,
    pretrained_file: str | None = None,
) -> tuple[nn.Module, int]:
    """Create a timm ResNet or ViT feature extractor.

    Args:
        name: a timm ResNet (``resnet18``, ``resnet50``, ...) or ViT (``vit_small_patch16_224``, ...),
            optionally with timm's pretrained tag (``resnet18.tv_in1k``, ``vit_small_patch16_224.dino``),
            which picks the weights ``pretrained`` loads; the architecture is the untagged name's.
        small_stem: ResNets: 3x3 stride-1 first conv and no max-pool. ViTs: must be False.
        width: multiplier on the stage widths (ResNets) or the embedding width (ViTs; 0.25 = quarter-width).
        pretrained: load timm's pretrained weights, the tag's or else timm's default for the name
            (needs them cached or a network).
        zero_init_last: zero the last BN of every residual block (timm's default). False gives
            torchvision's initialisation, which the study (solo-learn) used; the paper presets
            (sweeps/configs/paper_table1_*.yaml) set it. On the 8x8 digits the torchvision-style
            untrained network already scores ~71% kNN, above 3-epoch trained ones, so the
            quick default stays timm's. No effect on a ViT.
        stem_padding: zero padding of the small stem's 3x3 conv. 1 keeps the image size (MoCo's
            CIFAR demo); solo-learn, and so the study, pads by 2 (32 px images give 34 x 34 maps).
        img_size: ViTs only: the input side in pixels (None: the model's own, e.g. 224).
        patch_size: ViTs only: the patch side in pixels (None: the model's own, e.g. 16).
        pretrained_file: with ``pretrained``, timm loads the weights from this local state dict of the
            architecture (a machine without a network), adapting them as it adapts its own (a
            ViT's position embedding resized to ``img_size``, the classifier dropped).

    Returns:
        (model, feature_dim): model maps (B, 3, H, W) float to (B, feature_dim).

    Raises:
        ValueError: one line naming the bad value and the valid choices.
    """
    arch = architecture(name)
    vit = is_vit(arch) and arch in timm.list_models("vit_*")
    if not vit and (not arch.startswith("resnet") or arch not in timm.list_models("resnet*")):
        raise ValueError(
            f"unknown backbone {name!r}; valid timm ResNets and ViTs include: {', '.join(valid_backbones())}"
        )
    check_tag(name)
    if width <= 0:
        raise ValueError(f"width {width} is invalid; valid: a positive multiplier such as 0.25, 0.5, 1")
    weights = {"pretrained": pretrained}
    if pretrained and pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise ValueError(f"model.pretrained_file {pretrained_file!r} does not exist; valid: a saved state dict")
        weights["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
    if vit:
        return _build_vit(name, small_stem, width, weights, img_size, patch_size)
    for key, value in (("img_size", img_size), ("patch_size", patch_size)):
        if value is not None:
            raise ValueError(f"model.{key} {value!r} is invalid for ResNet {name!r} (a ViT setting); valid: null")
    channels = tuple(max(1, round(c * width)) for c in RESNET_CHANNELS)
    model = timm.create_model(name, num_classes=0, channels=channels, zero_init_last=zero_init_last, **weights)
    if small_stem:
        if isinstance(model.conv1, nn.Sequential):  # deep 3x3 stem ("d"/"t"/"c"/"s" variants): stride 1
            model.conv1[0].stride = (1, 1)
            model.conv1[0].padding = (stem_padding, stem_padding)
        else:
            stem_out = model.conv1.out_channels
            model.conv1 = nn.Conv2d(3, stem_out, kernel_size=3, stride=1, padding=stem_padding, bias=False)
        model.maxpool = nn.Identity()
    return model, model.num_features


def vit_input_size(name: str, img_size: int | None) -> int:
    """The image side a ViT ``name`` takes: ``img_size``, else the architecture's own (224 for ``*_224``)."""
    if img_size is not None:
        return img_size
    with torch.device("meta"):
        return timm.create_model(name, num_classes=0).patch_embed.img_size[0]


def _build_vit(
    name: str, small_stem: bool, width: float, weights: dict, img_size: int | None, patch_size: int | None
) -> tuple[nn.Module, int]:
    """A timm ViT with CLS-token features; see ``build_backbone`` (``weights``: timm's pretrained options)."""
    if small_stem:
        raise ValueError(
            f"model.small_stem True is invalid for ViT {name!r} (a ResNet stem); valid: false, "
            "with model.img_size and model.patch_size for small images"
        )
    for key, value in (("img_size", img_size), ("patch_size", patch_size)):
        if value is not None and value < 1:
            raise ValueError(f"model.{key} {value!r} is invalid; valid: null or an integer >= 1")
    with torch.device("meta"):  # the architecture's own sizes, without allocating its weights
        shape = timm.create_model(name, num_classes=0)
    if not isinstance(shape, VisionTransformer):
        valid = ", ".join(m for m in valid_backbones() if is_vit(m))
        raise ValueError(f"backbone {name!r} is not a plain timm VisionTransformer; valid ViTs include: {valid}")
    kwargs: dict = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    grid = (img_size or shape.patch_embed.img_size[0]) / (patch_size or shape.patch_embed.patch_size[0])
    if grid != int(grid):
        raise ValueError(
            f"model.patch_size {patch_size or shape.patch_embed.patch_size[0]} does not divide model.img_size "
            f"{img_size or shape.patch_embed.img_size[0]} for {name!r}; valid: a divisor of the image side"
        )
    if width != 1.0:
        heads = shape.blocks[0].attn.num_heads
        kwargs["embed_dim"] = heads * max(1, round(shape.embed_dim * width / heads))
    model = timm.create_model(name, num_classes=0, global_pool="token", **weights, **kwargs)
    return model, model.num_features


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over ``num_splits`` interleaved sub-batches in training (eval: plain BN).

    One device sees the whole batch; MoCo's key encoder must not normalise a key with the
    statistics of the batch that holds its query ("BN cheating", He et al. 2020 §3.3). Splitting
    simulates per-GPU BN, as the moco CIFAR demo's SplitBatchNorm does. Sample ``i`` falls in
    split ``i % num_splits``.
    """

    def __init__(self, num_features: int, num_splits: int = 8, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        b, c, h, w = x.shape
        if b % s:
            raise ValueError(f"batch {b} is not divisible by bn_splits {s}")
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        out = nn.functional.batch_norm(
            x.reshape(b // s, c * s, h, w),
            mean,
            var,
            self.weight.repeat(s),
            self.bias.repeat(s),
            True,
            self.momentum,
            self.eps,
        ).view(b, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
        # The split view is NCHW; give channels_last back, else every following conv converts
        # layouts (MoCo steps ~20% slower on CPU with channels_last, fp32 and bf16 alike).
        if x.is_contiguous(memory_format=torch.channels_last):
            return out.contiguous(memory_format=torch.channels_last)
        return out


def split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by a SplitBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, num_splits, eps=child.eps, momentum=child.momentum)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            split_batchnorm(child, num_splits)
    return module


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """Undo ``split_batchnorm`` and ``trainables.distributed.sync_batchnorm``: every BN wrapper (a
    SplitBatchNorm2d, or a SyncBatchNorm of a data-parallel trial) becomes the plain BatchNorm it
    replaced, with the same state (fine-tuning trains one process with ordinary BN, at any batch size)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and type(child) not in (nn.BatchNorm1d, nn.BatchNorm2d):
            kind = getattr(child, "plain_type", nn.BatchNorm2d)  # SyncBatchNorm records what it replaced
            plain = kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain.to(child.weight.device) if child.affine else plain)
        else:
            plain_batchnorm(child)
    return module
