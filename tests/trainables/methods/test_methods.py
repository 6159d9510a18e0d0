"""The method contract, checked for every registered method (a new method is covered for free)."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from tests.trainables.conftest import small_params
from tests.trainables.methods.conftest import BATCH, assert_same_state, batch, build, train
from trainables.config import CHOICES
from trainables.data.augment import AUGMENTATIONS
from trainables.methods import METHODS, Method, build_params, method_class, register_method

NAMES = sorted(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_method__class_declares_the_contract(name):
    cls = method_class(name)
    assert cls.name == name and cls.n_views >= 1 and isinstance(cls.uses_labels, bool)
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    build_params(name, {})  # every parameter has a default
    d = cls.defaults
    assert d["optimizer"] in CHOICES["optim.optimizer"] and d["lr"] > 0 and d["weight_decay"] >= 0
    assert d["augmentation"] in AUGMENTATIONS


@pytest.mark.parametrize("name", NAMES)
def test_training_step__finite_scalar_loss_with_grad_for_every_trainable_param(name, digits):
    method = build(name).train()
    views, labels = batch(name, digits)
    out = method.training_step(views, labels)
    loss = out["loss"]
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    assert all(v.numel() == 1 for v in out.values()), "extra outputs are scalars the loop can log"
    loss.backward()
    dead = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"trainable but unused (would only be decayed): {dead[:5]}"
    grads = [p.grad for p in method.backbone.parameters()]
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_embed__gives_backbone_features(name, digits):
    method = build(name).eval()
    views, _ = batch(name, digits)
    with torch.no_grad():
        feats = method.embed(views[0])
        assert feats.shape == (BATCH, method.feature_dim) == (BATCH, 64)
        assert torch.equal(feats, method.backbone(views[0]))
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize("name", NAMES)
def test_on_after_step__runs_and_leaves_the_online_network_alone(name, digits):
    method = build(name)
    views, labels = batch(name, digits)
    train(method, views, labels, steps=1)
    online = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    keys = set(method.state_dict())
    method.on_after_step(0.5)
    assert_same_state(method.backbone.state_dict(), online)
    assert set(method.state_dict()) == keys


@pytest.mark.parametrize("name", NAMES)
def test_state_dict__round_trips_through_torch_save_including_extra_state(name, digits):
    a, b = build(name, seed=0), build(name, seed=1)
    views, labels = batch(name, digits)
    train(a, views, labels, steps=2)  # queues, centres, momenta and BN statistics move
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert_same_state(a.state_dict(), b.state_dict())
    # The restored copy continues exactly like the original (generators, momenta included).
    assert train(a, views, labels, steps=2) == train(b, views, labels, steps=2)
    assert_same_state(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_training__loss_decreases_on_a_fixed_batch_of_digits(name, digits):
    # A queue of one batch: larger, it would hold several stale copies of every positive key.
    queue = {"queue_size": BATCH} if "queue_size" in small_params(name) else {}
    # DINO's BN-free head (solo-learn's default) collapses on 16 nearly parallel features of an
    # untrained 1/8-width network within a few steps (loss -> 0, then log K once the centre catches
    # up); BN in the head spreads them. The default head is covered by the contract tests above.
    head = {"head_batchnorm": True} if name == "dino" else {}
    method = build(name, **queue, **head)
    views, labels = batch(name, digits)
    # DINO's loss first rises while its centre settles (teacher sharper than student), then falls;
    # SupCon's BN-free projector (the study's) diverges on one batch at lr 0.1.
    steps, lr = {"dino": (40, 0.05), "supcon": (20, 0.01)}.get(name, (20, 0.1))
    losses = train(method, views, labels, steps=steps, lr=lr)
    # From step 1: step 0 of MoCo scores against the random initial queue, an easier task.
    assert losses[-1] < 0.95 * losses[1], losses


def test_register_method__duplicate_name_raises_naming_the_owner():
    class Again(Method):
        name = "moco_v2"

    with pytest.raises(ValueError, match="'moco_v2' is already registered by MocoV2"):
        register_method(Again)
    assert METHODS["moco_v2"].__name__ == "MocoV2"


def test_register_method__empty_name_raises():
    class Nameless(Method):
        pass

    with pytest.raises(ValueError, match="Nameless needs a non-empty `name`"):
        register_method(Nameless)


def test_method_class__unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        method_class("simsiam")
    assert "'simsiam'" in str(err.value) and ", ".join(NAMES) in str(err.value)


def test_build_params__unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        build_params("byol", {"tau": 0.9})
    assert "tau" in str(err.value) and "momentum_base" in str(err.value)


def test_registry__has_the_studys_methods():
    study = {"supervised", "supcon", "moco_v2", "simclr", "byol", "barlow_twins", "dino"}
    assert study <= set(METHODS)
