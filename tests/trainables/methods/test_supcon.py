"""SupCon specifics: the study's projector (no BN) and loss form (solo-learn's sum inside the log)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.trainables.methods.conftest import batch, build
from trainables.losses import supcon
from trainables.methods import build_method, build_params


def test_supcon__defaults_are_the_studys_projector_and_loss_form():
    method = build_method("supcon", nn.Identity(), 512, 10)
    layers = [
        (type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None)) for m in method.projector
    ]
    assert layers == [("Linear", 512, 2048), ("ReLU", None, None), ("Linear", 2048, 256)]
    assert method.params.loss_form == "in" and method.params.temperature == 0.2


def test_supcon__proj_batchnorm_adds_bn_and_simclr_keeps_its_own():
    assert any(isinstance(m, nn.BatchNorm1d) for m in build("supcon", proj_batchnorm=True).projector)
    assert any(isinstance(m, nn.BatchNorm1d) for m in build("simclr").projector)


@pytest.mark.parametrize("form", ["in", "out"])
def test_training_step__uses_the_chosen_loss_form(digits, form):
    method = build("supcon", loss_form=form).train()
    views, labels = batch("supcon", digits)
    loss = method.training_step(views, labels)["loss"]
    with torch.no_grad():
        z = [method.projector(method.backbone(v)) for v in views]
    torch.testing.assert_close(loss.detach(), supcon(z, labels, 0.2, form=form))


def test_supcon__unknown_loss_form_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"method\.loss_form 'mean' is invalid; valid: in, out"):
        build_params("supcon", {"loss_form": "mean"})
