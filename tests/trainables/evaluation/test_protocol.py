"""trainables.evaluation.protocol: the per-epoch metrics, including the study's own kNN beside ours."""

from __future__ import annotations

import copy

import pytest
import torch

from trainables.config import EvalConfig
from trainables.evaluation.protocol import epoch_metrics


def _naive_study_knn(
    bank: torch.Tensor, bank_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, k: int
) -> float:
    """solo-learn's WeightedKNNClassifier, euclidean: k nearest by L2 distance on raw features,
    each voting 1 / (d + 1e-5) for its class; the largest class total wins."""
    correct = 0
    for x, y in zip(test.double(), test_y, strict=True):
        d = (bank.double() - x).norm(dim=1)
        near = d.argsort()[:k]
        votes = torch.zeros(int(bank_y.max()) + 1, dtype=torch.float64).index_add_(
            0, bank_y[near], 1 / (d[near] + 1e-5)
        )
        correct += int(votes.argmax() == y)
    return 100 * correct / len(test_y)


def test_epoch_metrics__reports_the_studys_euclidean_knn_beside_ours():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    bank_y, test_y = torch.arange(4).repeat(60), torch.arange(4).repeat(15)
    # unnormalised features whose norms vary: cosine and euclidean neighbours then differ
    scale = lambda n: torch.rand(n, 1, generator=g) * 4 + 0.2  # noqa: E731
    bank = (centres[bank_y] + torch.randn(240, 16, generator=g) * 2.5) * scale(240)
    test = (centres[test_y] + torch.randn(60, 16, generator=g) * 2.5) * scale(60)
    m = epoch_metrics((bank, bank_y), (test, test_y), 4, EvalConfig(knn_k=20, knn_distance="cosine"))
    assert m["knn_acc_study"] == pytest.approx(_naive_study_knn(bank, bank_y, test, test_y, k=200))
    assert m["knn_acc"] != m["knn_acc_study"]  # ours (cosine, k 20) is another protocol


def test_epoch_metrics__bf16_bank_agrees_with_fp32_and_leaves_the_studys_knn_alone():
    """eval.bank_dtype bf16 rounds unit vectors to ~3 digits: on 2,000 x 500 clustered features the
    cosine kNN may change a few borderline votes, stated tolerance 1 point; the euclidean study kNN
    stays fp32, exactly equal."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(10, 64, generator=g)
    bank_y, test_y = torch.arange(10).repeat(200), torch.arange(10).repeat(50)
    bank = centres[bank_y] + torch.randn(2000, 64, generator=g) * 4
    test = centres[test_y] + torch.randn(500, 64, generator=g) * 4
    fp32 = epoch_metrics((bank, bank_y), (test, test_y), 10, EvalConfig())
    bf16 = epoch_metrics((bank, bank_y), (test, test_y), 10, EvalConfig(bank_dtype="bf16"))
    assert 40 < fp32["knn_acc"] < 90  # not saturated: borderline votes exist (64.2 vs 63.8 in bf16 here)
    assert abs(bf16["knn_acc"] - fp32["knn_acc"]) <= 1.0
    assert bf16["knn_acc_study"] == fp32["knn_acc_study"] and bf16["uniformity"] == fp32["uniformity"]


def test_embed_padded__a_padded_last_batch_changes_no_feature():
    """What a compiled encoder's single evaluation shape costs: nothing (eval-mode BN; 1e-6)."""
    from trainables.backbone import build_backbone
    from trainables.evaluation.protocol import embed_padded

    torch.manual_seed(0)
    net = build_backbone("resnet18", width=0.0625)[0].eval()
    x = torch.randn(11, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    seen = []
    net.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    with torch.no_grad():
        padded, plain = embed_padded(net, x, 4), net(x)
    assert seen == [4, 4, 4, 11] and padded.shape == plain.shape
    torch.testing.assert_close(padded, plain, rtol=1e-6, atol=1e-6)


def test_reference_fp32__features_match_fp64_and_a_compiled_encoder_is_not_recompiled():
    """The final metrics' features: IEEE fp32 (within 1e-5 of fp64, where bf16 autocast is ~1e-2
    off) from an encoder compiled under bf16 autocast, which runs eagerly there instead of
    compiling a second graph; TF32 flags come back as they were."""
    from trainables.backbone import build_backbone
    from trainables.evaluation.protocol import reference_fp32

    torch.manual_seed(0)
    net = build_backbone("resnet18", width=0.125)[0].eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    compiled_graphs = []

    def counting_backend(gm, example_inputs):
        compiled_graphs.append(gm)
        return gm.forward

    encoder = torch.compile(net, backend=counting_backend, dynamic=False)
    with torch.no_grad():
        reference = copy.deepcopy(net).double()(x.double()).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = encoder(x).float()
        graphs = len(compiled_graphs)
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32  # the legacy flags
        with reference_fp32():
            for switch in (torch.backends.cudnn.conv, torch.backends.cuda.matmul, torch.backends.mkldnn.matmul):
                assert switch.fp32_precision == "ieee"
            exact = encoder(x)
    assert graphs >= 1 and len(compiled_graphs) == graphs  # compiled under autocast, not again
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == tf32  # readable, unchanged
    assert exact.dtype == torch.float32
    scale = reference.abs().max()
    assert (exact - reference).abs().max() / scale < 1e-5
    assert (low - reference).abs().max() / scale > 1e-3  # bf16 is visibly off: the check can tell them apart


def test_reference_fp32__overrides_a_lowered_matmul_precision_and_restores_it():
    """A user's ``set_float32_matmul_precision("medium")`` (bf16 matmuls on oneDNN, TF32 on CUDA) is
    IEEE inside, back to "medium" after, also when the body raises."""
    from trainables.evaluation.protocol import reference_fp32

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with pytest.raises(RuntimeError, match="inside"), reference_fp32():
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            raise RuntimeError("inside")
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
