"""Grad-CAM on a hand-built network whose class evidence sits in known image quadrants."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.gradcam import grad_cam, last_spatial_layer, prototype_head
from trainables.backbone import build_backbone

QUADRANTS = {
    "top-left": (slice(0, 16), slice(0, 16)),
    "top-right": (slice(0, 16), slice(16, 32)),
    "bottom-left": (slice(16, 32), slice(0, 16)),
    "bottom-right": (slice(16, 32), slice(16, 32)),
}


def colour_net() -> nn.Module:
    """Features = (redness, greenness) averaged over the image: class 0 = red, class 1 = green."""
    conv = nn.Conv2d(3, 2, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1], conv.weight[0, 1, 1, 1] = 1.0, -1.0  # R - G
        conv.weight[1, 1, 1, 1], conv.weight[1, 0, 1, 1] = 1.0, -1.0  # G - R
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def image(red: str, green: str) -> torch.Tensor:
    """(1, 3, 32, 32): a red square in one quadrant, a green one in another, black elsewhere."""
    x = torch.zeros(1, 3, 32, 32)
    (ry, rx), (gy, gx) = QUADRANTS[red], QUADRANTS[green]
    x[0, 0, ry, rx] = 1.0
    x[0, 1, gy, gx] = 1.0
    return x


def peak_quadrant(cam: torch.Tensor) -> str:
    y, x = divmod(int(cam.argmax()), cam.shape[-1])
    return next(q for q, (ys, xs) in QUADRANTS.items() if ys.start <= y < ys.stop and xs.start <= x < xs.stop)


@pytest.mark.parametrize(
    ("red", "green"), [("top-left", "bottom-right"), ("bottom-left", "top-right"), ("top-right", "top-left")]
)
def test_grad_cam__peaks_in_the_quadrant_holding_the_explained_class(red, green):
    net, x = colour_net(), image(red, green)
    cams, _ = grad_cam(net, lambda f: f, x, target=torch.tensor([0]))
    assert peak_quadrant(cams[0]) == red
    ys, xs = QUADRANTS[red]
    assert cams[0][ys, xs].sum() > 0.9 * cams[0].sum()  # almost all the evidence is there
    cams, _ = grad_cam(net, lambda f: f, x, target=torch.tensor([1]))
    assert peak_quadrant(cams[0]) == green
    assert cams.shape == (1, 32, 32) and float(cams.max()) == pytest.approx(1.0) and float(cams.min()) >= 0


def test_grad_cam__default_target_is_the_predicted_class():
    x = image("top-left", "bottom-right")
    x[0, 1] *= 3  # more green: class 1 wins
    cams, scores = grad_cam(colour_net(), lambda f: f, x)
    assert scores.argmax() == 1 and peak_quadrant(cams[0]) == "bottom-right"


def test_last_spatial_layer__is_layer4_of_a_timm_resnet():
    backbone, _ = build_backbone("resnet18", width=0.125)
    assert last_spatial_layer(backbone.eval(), torch.zeros(2, 3, 32, 32)) is backbone.layer4


def test_grad_cam__runs_on_a_resnet_with_the_prototype_head():
    torch.manual_seed(0)
    backbone, _ = build_backbone("resnet18", width=0.125)
    backbone.eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        feats = backbone(x)
    head = prototype_head(feats, torch.tensor([0, 0, 1, 1, 2, 2]), num_classes=3)
    cams, scores = grad_cam(backbone, head, x)
    assert cams.shape == (6, 32, 32) and scores.shape == (6, 3)
    assert torch.all((cams >= 0) & (cams <= 1))


def test_prototype_head__a_prototype_scores_highest_for_its_own_class():
    feats = torch.tensor([[1.0, 0, 0], [2.0, 0.1, 0], [0, 1.0, 0], [0, 0, 3.0]])
    head = prototype_head(feats, torch.tensor([0, 0, 1, 2]), num_classes=3)
    assert head(torch.tensor([[5.0, 0, 0], [0, 0.2, 0], [0, 0, 1.0]])).argmax(1).tolist() == [0, 1, 2]
