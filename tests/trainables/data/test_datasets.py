"""Dataset registry, ImageFolder decoding, caching, streaming and error messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import cache as cache_module
from trainables.data.datasets import DATASETS, DatasetError, load_dataset, register_dataset


def _write_folder(root, sizes=((40, 30), (50, 50)), classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                w, h = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_registry__has_the_promised_datasets():
    assert {"digits", "cifar10", "cifar100", "stl10", "imagefolder"} <= set(DATASETS)


def test_registry__duplicate_raises():
    with pytest.raises(ValueError, match="digits"):
        register_dataset("digits")(lambda *a: None)


def test_load__unknown_name_lists_valid(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", cache_dir=tmp_path)
    assert "'mnist'" in str(err.value) and "digits" in str(err.value) and "imagefolder:<path>" in str(err.value)


def test_digits__uint8_nchw_32px_rgb_with_labels(tmp_path):
    d = load_dataset("digits", cache_dir=tmp_path)
    assert d.train.images.shape[1:] == (3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.train.labels.dtype == torch.int64 and d.num_classes == 10
    assert len(d.train) + len(d.test) == 1797
    assert set(d.test.labels.tolist()) == set(range(10))
    assert d.train.images.float().std() > 50  # real strokes, not a blank tensor


def test_imagefolder__any_size_resized_and_labelled_by_sorted_class(tmp_path):
    root = _write_folder(tmp_path / "ds")
    d = load_dataset(f"imagefolder:{root}", image_size=16, cache_dir=tmp_path / "cache")
    assert d.classes == ("cat", "dog")
    assert d.train.images.shape == (6, 3, 16, 16)
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_imagefolder__decoded_pixels_match_pil(tmp_path):
    root = _write_folder(tmp_path / "ds", sizes=((8, 8),))
    d = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    expected = np.asarray(Image.open(root / "train" / "cat" / "0.png").convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(d.train.images[0].numpy(), expected)


def test_imagefolder__cache_is_reused_and_invalidated_by_changes(tmp_path):
    root = _write_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train" / "cat" / "new.png")
    d = load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2 and len(d.train) == 7


def test_imagefolder__over_budget_streams_from_a_memory_map(tmp_path):
    root = _write_folder(tmp_path / "ds")
    d = load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "c", memory_budget_gb=1e-9)
    assert not d.train.in_memory
    ref = load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "c")
    assert ref.train.in_memory and torch.equal(d.train.images[[4, 1]], ref.train.images[[4, 1]])


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("missing", "does not exist"),
        ("no_train", "no train/"),
        ("empty_class", "has no images"),
        ("unreadable", "cannot read image"),
    ],
)
def test_imagefolder__malformed_folder_names_the_path(tmp_path, breakage, named):
    root = _write_folder(tmp_path / "ds")
    bad = root / "train" / "dog"
    if breakage == "missing":
        root, bad = tmp_path / "nope", tmp_path / "nope"
    elif breakage == "no_train":
        for p in (root / "train").rglob("*.png"):
            p.unlink()
        for d in sorted((root / "train").iterdir()):
            d.rmdir()
        (root / "train").rmdir()
        bad = root
    elif breakage == "empty_class":
        for p in bad.iterdir():
            p.unlink()
    else:
        bad = root / "train" / "dog" / "1.png"
        bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "cache")
    assert named in str(err.value) and str(bad) in str(err.value)


def test_cifar10_jpeg__real_data_decodes_once_then_loads_from_the_cache(cifar10_jpeg, tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "cifar-cache"
    d = load_dataset(f"imagefolder:{cifar10_jpeg}", cache_dir=cache)
    assert d.train.images.shape == (50_000, 3, 32, 32) and d.test.images.shape == (10_000, 3, 32, 32)
    assert d.train.labels.bincount().tolist() == [5000] * 10

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cache_module, "_write", no_decoding)  # how fast a reload is: benchmarks/pipeline.py
    again = load_dataset(f"imagefolder:{cifar10_jpeg}", cache_dir=cache)
    assert torch.equal(again.test.images[:100], d.test.images[:100])


def test_mean_std__a_class_ordered_split_gives_the_shuffled_splits_statistics():
    # Two classes of very different colour, stored class by class as an ImageFolder tree is:
    # the first 10k images would all be class 0.
    from trainables.data.datasets import ImageDataset, Split

    g = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 60, (12_000, 3, 4, 4), generator=g, dtype=torch.uint8)
    bright = torch.randint(180, 256, (12_000, 3, 4, 4), generator=g, dtype=torch.uint8)
    images, labels = torch.cat([dark, bright]), torch.cat([torch.zeros(12_000), torch.ones(12_000)]).long()
    perm = torch.randperm(len(labels), generator=g)

    def stats(order):
        split = Split(images[order], labels[order])
        return ImageDataset("t", ("dark", "bright"), split, split).mean_std()

    (m_ordered, s_ordered), (m_shuffled, s_shuffled) = stats(torch.arange(len(labels))), stats(perm)
    full = images.float().div(255)
    assert m_ordered == pytest.approx(m_shuffled, abs=1e-3) and s_ordered == pytest.approx(s_shuffled, abs=1e-3)
    assert m_ordered == pytest.approx(full.mean((0, 2, 3)).tolist(), abs=5e-3)
