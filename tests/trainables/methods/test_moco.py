"""MoCo v2 specifics: the BN-cheating guard, the momentum schedule, the queue and the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.trainables.conftest import small_params
from tests.trainables.methods.conftest import batch, build, train
from trainables.backbone import SplitBatchNorm2d, build_backbone
from trainables.build import build_model
from trainables.config import TrialConfig
from trainables.losses import info_nce
from trainables.methods import build_params
from trainables.methods.moco import MocoV2


def test_moco__bn_cheating_guard_is_on_by_default():
    cfg = TrialConfig(method="moco_v2").replace({"model.width": 0.125, "method.queue_size": 64})
    method = build_model(cfg.resolved(), 10, torch.device("cpu"))
    for net in (method.backbone, method.key_backbone):
        splits = [m for m in net.modules() if isinstance(m, SplitBatchNorm2d)]
        assert splits and all(m.num_splits == 8 for m in splits)
        assert not [m for m in net.modules() if type(m) is torch.nn.BatchNorm2d]


def test_moco__bn_splits_1_turns_the_guard_off():
    method = build("moco_v2", bn_splits=1)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in method.modules())


def test_key__runs_the_key_encoder_on_a_shuffled_batch(digits):
    method = build("moco_v2").train()
    views, _ = batch("moco_v2", digits)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(method.shuffle_generator.get_state())
    perm = torch.randperm(len(views[0]), generator=replay)
    assert not torch.equal(perm, torch.arange(len(perm)))
    seen = []
    method.key_backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    method.key(views[0])
    assert torch.equal(seen[0], views[0][perm])


def test_key__unshuffles_to_the_plain_key_encoder_output_in_eval_mode(digits):
    method = build("moco_v2").eval()
    x = batch("moco_v2", digits)[0][0]
    state = method.shuffle_generator.get_state()
    keys = method.key(x)
    assert not torch.equal(method.shuffle_generator.get_state(), state), "the shuffle generator must advance"
    with torch.no_grad():
        plain = F.normalize(method.key_projector(method.key_backbone(x)), dim=1)
    torch.testing.assert_close(keys, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(keys, plain.roll(1, 0))  # order matters: the keys are distinct


def test_key__in_training_differs_from_an_unshuffled_pass(digits):
    """With split BN, which samples share statistics depends on the order: the shuffle is live."""
    method = build("moco_v2").train()
    x = batch("moco_v2", digits)[0][0]
    keys = method.key(x)
    with torch.no_grad():
        plain = F.normalize(method.key_projector(method.key_backbone(x)), dim=1)
    assert not torch.allclose(keys, plain, atol=1e-4)


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 1.0])
def test_on_after_step__momentum_follows_the_cosine_from_099_to_0999(progress):
    method = build("moco_v2")
    assert method.momentum == 0.99
    method.on_after_step(progress)
    expected = 0.999 - (0.999 - 0.99) * (math.cos(math.pi * progress) + 1) / 2
    assert method.momentum == pytest.approx(expected)
    assert method.momentum == pytest.approx({0.0: 0.99, 0.5: 0.9945, 1.0: 0.999}.get(progress, expected))


def test_on_after_step__key_encoder_is_an_ema_with_the_current_momentum(digits):
    method = build("moco_v2")
    views, labels = batch("moco_v2", digits)
    train(method, views, labels, steps=1)  # online and key encoders now differ; momentum moved
    m = method.momentum
    online = [p.detach().clone() for p in method.backbone.parameters()]
    key = [p.detach().clone() for p in method.key_backbone.parameters()]
    method.on_after_step(0.5)
    for k0, o, k1 in zip(key, online, method.key_backbone.parameters(), strict=True):
        torch.testing.assert_close(k1, m * k0 + (1 - m) * o)


def test_enqueue__writes_at_the_pointer_and_wraps():
    method = build("moco_v2", queue_size=20, proj_dim=4)
    method.queue_ptr.fill_(16)
    keys = torch.arange(2 * 8 * 4, dtype=torch.float32).view(2, 8, 4)
    method._enqueue(keys)
    assert method.queue_ptr.item() == 4
    assert torch.equal(method.queue[:, 16:20], keys[:, :4])
    assert torch.equal(method.queue[:, 0:4], keys[:, 4:])


def test_training_step__queue_pointer_wraps_over_steps(digits):
    method = build("moco_v2", queue_size=40)
    views, labels = batch("moco_v2", digits)  # 16 keys per step
    for ptr in (16, 32, 8, 24):
        with torch.no_grad():
            method.training_step(views, labels)
        assert method.queue_ptr.item() == ptr


def test_training_step__symmetric_loss_uses_the_other_views_queue(digits):
    method = build("moco_v2", queue_init="random").eval()  # eval: keys do not depend on the shuffle
    views, labels = batch("moco_v2", digits)
    queue = method.queue.clone()
    with torch.no_grad():
        q1, q2 = method.query(views[0]), method.query(views[1])
        k1 = F.normalize(method.key_projector(method.key_backbone(views[0])), dim=1)
        k2 = F.normalize(method.key_projector(method.key_backbone(views[1])), dim=1)
        loss = method.training_step(views, labels)["loss"]
    expected = (info_nce(q1, k2, queue[1], 0.2) + info_nce(q2, k1, queue[0], 0.2)) / 2
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(method.queue[0, :16], k1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.queue[1, :16], k2, rtol=1e-5, atol=1e-6)


def test_queue_init_grow__first_step_in_batch_negatives_then_only_enqueued_keys(digits):
    method = build("moco_v2", queue_size=40).eval()  # 16 keys per step
    views, labels = batch("moco_v2", digits)
    with torch.no_grad():
        q1, q2 = method.query(views[0]), method.query(views[1])
        k1 = F.normalize(method.key_projector(method.key_backbone(views[0])), dim=1)
        k2 = F.normalize(method.key_projector(method.key_backbone(views[1])), dim=1)
        first = method.training_step(views, labels)["loss"]
        assert method.queue_filled.item() == 16
        second = method.training_step(views, labels)["loss"]
    in_batch = (info_nce(q1, k2, None, 0.2) + info_nce(q2, k1, None, 0.2)) / 2
    torch.testing.assert_close(first, in_batch, rtol=1e-5, atol=1e-5)
    grown = (info_nce(q1, k2, k2, 0.2) + info_nce(q2, k1, k1, 0.2)) / 2  # the 16 keys of step one
    torch.testing.assert_close(second, grown, rtol=1e-5, atol=1e-5)
    for _ in range(2):
        with torch.no_grad():
            method.training_step(views, labels)
    assert method.queue_filled.item() == 40  # full: capped at K


def test_queue_init_random__starts_full():
    assert build("moco_v2", queue_size=40, queue_init="random").queue_filled.item() == 40


def test_proj_batchnorm__adds_bn_after_the_hidden_layer_only_when_asked():
    plain, with_bn = build("moco_v2"), build("moco_v2", proj_batchnorm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.projector.modules())
    assert [type(m).__name__ for m in with_bn.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


class _ReferenceQueue(MocoV2):
    """The queue as it was before the host mirror (issue 24): fill read from the device every step."""

    def training_step(self, views, labels):
        q1, q2 = self.query(views[0]), self.query(views[1])
        k1, k2 = self.key(views[0]), self.key(views[1])
        filled = int(self.queue_filled)
        queue = self.queue[:, :filled].clone() if filled else [None, None]
        t = self.params.temperature
        if self.params.symmetric:
            loss = (info_nce(q1, k2, queue[1], t) + info_nce(q2, k1, queue[0], t)) / 2
            self._reference_enqueue(torch.stack([k1, k2]))
        else:
            loss = info_nce(q1, k2, queue[0], t)
            self._reference_enqueue(k2[None])
        return {"loss": loss}

    @torch.no_grad()
    def _reference_enqueue(self, keys):
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(keys.shape[1], device=keys.device)) % size
        self.queue[:, idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[1]) % size)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + keys.shape[1], max=size))


def _reference(seed: int = 0, **overrides) -> MocoV2:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, dim = build_backbone("resnet18", width=0.125)
        return _ReferenceQueue(backbone, dim, 10, build_params("moco_v2", {**small_params("moco_v2"), **overrides}))


@pytest.mark.parametrize("queue_init", ["grow", "random"])
def test_queue__ring_buffer_equals_the_reference_queue_exactly(digits, queue_init):
    """K 40 with 16 keys a step: partly filled (grow), then wrapping mid-batch at step 3; losses,
    queue, pointer and fill bit for bit equal through real SGD steps and a state-dict round trip."""
    settings = {"queue_size": 40, "queue_init": queue_init}
    method, ref = build("moco_v2", **settings), _reference(**settings)
    views, labels = batch("moco_v2", digits)
    assert train(method, views, labels, steps=3) == train(ref, views, labels, steps=3)
    for key in ("queue", "queue_ptr", "queue_filled"):
        assert torch.equal(getattr(method, key), getattr(ref, key)), key
    assert method.queue_fill() == int(ref.queue_filled) == 40
    fresh = build("moco_v2", **settings)
    fresh.load_state_dict(method.state_dict())  # the host mirror follows the loaded buffer
    assert fresh.queue_fill() == 40
    assert train(fresh, views, labels, steps=1) == train(ref, views, labels, steps=1)


def test_key__unshuffled_keys_equal_shuffled_ones_under_plain_bn(digits):
    """What a captured step drops: with bn_splits 1 the shuffle only reorders BN's sums (1e-5)."""
    method = build("moco_v2", bn_splits=1).train()
    x = batch("moco_v2", digits)[0][0]
    shuffled = method.key(x)
    method.shuffle_keys = False
    torch.testing.assert_close(method.key(x), shuffled, rtol=1e-5, atol=1e-5)
