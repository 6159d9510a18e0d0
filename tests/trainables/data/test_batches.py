"""The batch pipeline: pre-applied fixed corruptions, per-batch random ones, order, views."""

from __future__ import annotations

import pytest
import torch

from corruptions import parse
from trainables.data.augment import AUGMENTATIONS
from trainables.data.batches import (
    Pipeline,
    corrupt_split,
    eval_batches,
    index_batches,
    plan_corruption,
    train_batches,
)
from trainables.data.datasets import Split
from trainables.seeding import derive_seed, generators


def _split(n=40, size=8):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 4)


def test_plan__fixed_corruption_is_applied_once_to_the_split():
    split = _split()
    planned, left = plan_corruption(split, parse("glo_2"))
    assert left == parse("ori")
    assert torch.equal(planned.images, parse("glo_2")(split.images))


def test_plan__per_image_corruption_stays_per_batch():
    split = _split()
    planned, left = plan_corruption(split, parse("randglo_2"))
    assert planned is split and left == parse("randglo_2")


def test_plan__streamed_split_corrupts_per_batch():
    split = Split(_split().images, _split().labels, in_memory=False)
    planned, left = plan_corruption(split, parse("glo_2"))
    assert planned is split and left == parse("glo_2")


def test_index_batches__a_permutation_and_drop_last():
    batches = list(index_batches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(torch.cat(batches).tolist())) == 8
    assert [len(b) for b in index_batches(10, 4, None, shuffle=False, drop_last=False)] == [4, 4, 2]


def test_train_batches__views_normalised_and_reproducible():
    split = _split()
    pipe = Pipeline(parse("randloc_2"), lambda x, g: x.float() / 255, n_views=2, mean=(0.5,) * 3, std=(0.25,) * 3)
    first = list(train_batches(split, pipe, 8, generators(1), "cpu"))
    again = list(train_batches(split, pipe, 8, generators(1), "cpu"))
    assert len(first) == 5 and len(first[0][0]) == 2
    assert first[0][0][0].dtype == torch.float32 and first[0][0][0].shape == (8, 3, 8, 8)
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(first, again, strict=True))
    assert first[0][0][0].min() >= -2.0 - 1e-6 and first[0][0][0].max() <= 2.0 + 1e-6


@pytest.mark.parametrize("corruption", ["glo_2", "randglo_2"])
@pytest.mark.parametrize("augmentation", sorted(AUGMENTATIONS))
def test_train_batches__a_ranks_rows_are_the_single_process_rows(augmentation, corruption):
    """Each of 3 ranks loads and augments only its 4 rows of a batch of 12 (the whole batch first
    only for a per-image corruption) and gets exactly those rows of one process's views."""
    split, recipe = _split(n=30, size=16), AUGMENTATIONS[augmentation]
    pipe = Pipeline(parse(corruption), recipe, n_views=2, mean=(0.5,) * 3, std=(0.25,) * 3, resize_to=24)
    whole = list(train_batches(split, pipe, 12, generators(3), "cpu"))
    for rank in range(3):
        rows = slice(4 * rank, 4 * rank + 4)
        mine = list(train_batches(split, pipe, 12, generators(3), "cpu", rows))
        assert len(mine) == len(whole) == 2
        for (views, labels), (all_views, all_labels) in zip(mine, whole, strict=True):
            assert torch.equal(labels, all_labels[rows])
            assert [v.shape for v in views] == [(4, 3, 24, 24)] * 2
            for view, all_view in zip(views, all_views, strict=True):
                torch.testing.assert_close(view, all_view[rows], rtol=0, atol=1e-6)


def test_eval_batches__every_image_once_in_order_corrupted():
    split = _split(n=10)
    out = list(eval_batches(split, parse("glo_2"), 4, "cpu"))
    images = torch.cat([x for x, _ in out])
    assert torch.equal(images, corrupt_split(split, parse("glo_2")).images)
    assert torch.equal(torch.cat([y for _, y in out]), split.labels)


def test_seeding__purposes_independent_and_stable():
    assert derive_seed(0, "order") == derive_seed(0, "order")
    assert derive_seed(0, "order") != derive_seed(0, "augment") != derive_seed(1, "augment")
    a, b = generators(3), generators(3)
    assert torch.equal(torch.rand(4, generator=a["init"]), torch.rand(4, generator=b["init"]))
