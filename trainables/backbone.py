"""Backbones: any timm ResNet with ``num_classes=0`` (pooled features out).

``small_stem`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv and no pool,
the usual choice for 32-96 px images (moco CIFAR demo, solo-learn). It is an explicit option,
never inferred from a dataset name. ``width`` scales timm's per-stage ``channels``.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

RESNET_CHANNELS = (64, 128, 256, 512)


def build_backbone(
    name: str = "resnet18",
    *,
    small_stem: bool = True,
    width: float = 1.0,
    pretrained: bool = False,
    zero_init_last: bool = True,
    stem_padding: int = 1,
) -> tuple[nn.Module, int]:
    """Create a timm ResNet feature extractor.

    Args:
        name: a timm ResNet name (``resnet18``, ``resnet50``, ...).
        small_stem: 3x3 stride-1 first conv and no max-pool.
        width: multiplier on the stage widths (0.25 = quarter-width).
        pretrained: load timm's pretrained weights (needs them cached or a network).
        zero_init_last: zero the last BN of every residual block (timm's default). False gives
            torchvision's initialisation, which the study (solo-learn) used; the paper presets
            (sweeps/configs/paper_table1_*.yaml) set it. On the 8x8 digits the torchvision-style
            untrained network already scores ~71% kNN, above 3-epoch trained ones, so the
            quick default stays timm's.
        stem_padding: zero padding of the small stem's 3x3 conv. 1 keeps the image size (MoCo's
            CIFAR demo); solo-learn, and so the study, pads by 2 (32 px images give 34 x 34 maps).

    Returns:
        (model, feature_dim): model maps (B, 3, H, W) float to (B, feature_dim).
    """
    if not name.startswith("resnet") or name not in timm.list_models("resnet*"):
        valid = ", ".join(m for m in timm.list_models("resnet*") if m.count("_") == 0)
        raise ValueError(f"unknown backbone {name!r}; valid timm ResNets include: {valid}")
    if width <= 0:
        raise ValueError(f"width {width} is invalid; valid: a positive multiplier such as 0.25, 0.5, 1")
    channels = tuple(max(1, round(c * width)) for c in RESNET_CHANNELS)
    model = timm.create_model(
        name, pretrained=pretrained, num_classes=0, channels=channels, zero_init_last=zero_init_last
    )
    if small_stem:
        if isinstance(model.conv1, nn.Sequential):  # deep 3x3 stem ("d"/"t"/"c"/"s" variants): stride 1
            model.conv1[0].stride = (1, 1)
            model.conv1[0].padding = (stem_padding, stem_padding)
        else:
            stem_out = model.conv1.out_channels
            model.conv1 = nn.Conv2d(3, stem_out, kernel_size=3, stride=1, padding=stem_padding, bias=False)
        model.maxpool = nn.Identity()
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
