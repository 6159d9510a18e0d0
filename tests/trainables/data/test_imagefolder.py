"""ImageFolder scanning and decoding: bit depths, nested and hidden entries, decompression bombs,
the native size, file suffixes and the decoded-image cache key."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets.folder import make_dataset

from trainables.data import imagefolder
from trainables.data.datasets import DATASETS, DatasetError, load_dataset
from trainables.data.stream import decode_bytes, read_files, stream_batches

# 0 and 65535, both sides of a rounding boundary (128 / 257 = 0.498, 129 / 257 = 0.502), then noise.
GREY16 = np.concatenate([[0, 65535, 128, 129, 385, 386], np.random.default_rng(0).integers(0, 65536, 58)])
GREY16 = GREY16.reshape(8, 8).astype(np.uint16)


def _rgb(side: int | tuple[int, int] = 8, seed: int = 0) -> Image.Image:
    w, h = (side, side) if isinstance(side, int) else side
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _tree(root, files: dict[str, Image.Image | bytes], fmt: str | None = None):
    """Write ``{relative path: image or raw bytes}`` under ``root`` (PIL's format from the suffix
    unless ``fmt``); return ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path, format=fmt)
    return root


def _plain(root, classes=("a", "b"), per_class=2, side=8):
    """``{train,test}/<class>/<i>.png`` entries of ``side`` px RGB noise."""
    return {
        f"{split}/{c}/{i}.png": _rgb(side, seed=k * 31 + i)
        for split in ("train", "test")
        for k, c in enumerate(classes)
        for i in range(per_class)
    }


def _load_both(root, **kw):
    """(decoded once, streamed in this process) loads of ``root``; the streamed splits decoded whole."""
    spec = f"imagefolder:{root}"
    cached = load_dataset(spec, cache_dir=root.parent / "cache", streaming=False, **kw)
    streamed = load_dataset(spec, streaming=True, stream_workers=0, **kw)
    return cached, streamed


def _stream_all(split, gpu_decode=False) -> torch.Tensor:
    (out,) = stream_batches(split.images, [torch.arange(len(split))], "cpu", gpu_decode=gpu_decode)
    return out


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I;16N"])
def test_to_rgb__16bit_grey_scales_to_8bit_rounded(mode):
    dtype = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
    img = Image.frombytes(mode, (8, 8), GREY16.astype(dtype).tobytes())
    got = np.asarray(imagefolder.to_rgb(img, "x.png"))
    expected = np.rint(GREY16 / 257).astype(np.uint8)
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=2))
    assert got[0, :6, 0].tolist() == [0, 255, 0, 1, 1, 2]


@pytest.mark.parametrize(
    ("suffix", "array", "opens_as"),
    [
        ("png", GREY16, "I;16"),
        ("tif", GREY16.astype(">u2"), "I;16B"),
        ("pgm", GREY16, "I"),  # maxval 65535: Pillow opens it as mode I, rescaled to 0..65535
    ],
)
def test_decode__16bit_grey_file_is_scaled_in_the_cache_and_the_stream(tmp_path, suffix, array, opens_as):
    files = _plain(tmp_path)
    files["train/a/9_grey16." + suffix] = Image.fromarray(array)
    root = _tree(tmp_path / "ds", files)
    with Image.open(root / f"train/a/9_grey16.{suffix}") as img:
        assert img.mode == opens_as
    cached, streamed = _load_both(root, image_size=8)
    index = next(i for i, p in enumerate(streamed.train.images.paths) if "grey16" in p)
    expected = np.repeat(np.rint(GREY16 / 257).astype(np.uint8)[None], 3, axis=0)
    np.testing.assert_array_equal(cached.train.images[index].numpy(), expected)
    assert torch.equal(_stream_all(streamed.train), cached.train.images)
    assert torch.equal(_stream_all(streamed.train, gpu_decode=True), cached.train.images)  # bytes -> PIL


@pytest.mark.parametrize(("mode", "array"), [("I", GREY16.astype(np.int32) * 1000), ("F", GREY16 / 65535.0)])
def test_decode__32bit_int_and_float_are_refused_naming_the_file_and_mode(tmp_path, mode, array):
    files = _plain(tmp_path)
    files["train/b/9.tif"] = Image.fromarray(array.astype(np.int32 if mode == "I" else np.float32))
    root = _tree(tmp_path / "ds", files)
    bad = str(root / "train/b/9.tif")
    pattern = rf"^image '{bad}' has mode {mode} \(.*\); valid: 8-bit or unsigned 16-bit images"
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "cache", streaming=False)
    streamed = load_dataset(f"imagefolder:{root}", image_size=8, streaming=True, stream_workers=0)
    for gpu_decode in (False, True):
        with pytest.raises(DatasetError, match=pattern):
            _stream_all(streamed.train, gpu_decode)


def test_scan__class_folders_are_walked_in_torchvisions_order(tmp_path):
    outside = _tree(tmp_path / "elsewhere", {"x.png": _rgb(), "y.png": _rgb()})
    names = ["b.png", "a.png", "sub/c.png", "sub/deeper/d.png", "sub 2/e.png", "sub.png", "z.png", "sub/a.png"]
    files = _plain(tmp_path, classes=("a", "flat"))
    files.update({f"train/a/{n}": _rgb(seed=i) for i, n in enumerate(names)})
    root = _tree(tmp_path / "ds", files)
    (root / "train/a/linked").symlink_to(outside, target_is_directory=True)  # followed, as os.walk(followlinks=True)
    listing = imagefolder.scan(root)
    expected = make_dataset(str(root / "train"), {"a": 0, "flat": 1}, extensions=tuple(imagefolder.IMAGE_SUFFIXES))
    assert listing["train"] == expected
    assert len([p for p, label in listing["train"] if label == 0]) == 2 + len(names) + 2
    flat = [p for p, label in listing["train"] if label == 1]
    assert flat == sorted(flat) and len(flat) == 2  # a flat folder: its files sorted by name, as before


def test_scan__hidden_folders_and_files_are_neither_classes_nor_images(tmp_path):
    files = _plain(tmp_path)
    for split in ("train", "test"):
        files[f"{split}/.ipynb_checkpoints/0-checkpoint.png"] = _rgb()
        files[f"{split}/a/._0.png"] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X"  # AppleDouble: not an image
        files[f"{split}/a/.thumbs/0.png"] = _rgb()
        files[f"{split}/b/sub/.1.png"] = _rgb()
        files[f"{split}/b/sub/2.png"] = _rgb()
    root = _tree(tmp_path / "ds", files)
    d = load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "cache")
    assert d.classes == ("a", "b") and d.train.labels.tolist() == [0, 0, 1, 1, 1]
    listed = [os.path.relpath(p, root) for p, _ in imagefolder.scan(root)["test"]]
    assert listed == ["test/a/0.png", "test/a/1.png", "test/b/0.png", "test/b/1.png", "test/b/sub/2.png"]


@pytest.mark.parametrize("where", ["native_size", "decode", "decode_bytes"])
def test_decode__decompression_bomb_names_the_file_and_how_to_load_it(tmp_path, monkeypatch, where):
    root = _tree(tmp_path / "ds", _plain(tmp_path, side=16))
    path = str(root / "train/a/0.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16 x 16 = 256 > 2 x 100: an error, not a warning
    with pytest.raises(DatasetError) as err:
        if where == "native_size":
            load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
        elif where == "decode":
            imagefolder.decode(path, 8)
        else:
            decode_bytes(read_files([path]), [path], 8, "cpu")
    message = str(err.value)
    assert message.startswith(f"cannot read image {path!r}: Image size (256 pixels) exceeds limit")
    assert message.endswith("; pre-shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS") and "\n" not in message


@pytest.mark.parametrize("how", ["cached", "streamed", "streamed_bytes"])
def test_load__unset_image_size_refuses_an_image_of_another_size(tmp_path, how):
    files = _plain(tmp_path)  # first training image 8x8: the native size
    root = _tree(tmp_path / "ds", files)
    odd = root / "train/b/1.jpg"  # a JPEG: the bytes path decodes it with torchvision first
    _rgb(12).save(odd, quality=95)
    (root / "train/b/1.png").unlink()
    expected = (
        rf"^image '{odd}' is 12x12, but the folder's native size \(its first training image's\) is 8x8; "
        r"pass data\.image_size \(e\.g\. 32, 64, 96, 224\)$"
    )
    with pytest.raises(DatasetError, match=expected):
        if how == "cached":
            load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache", streaming=False)
        else:
            streamed = load_dataset(f"imagefolder:{root}", streaming=True, stream_workers=0)
            _stream_all(streamed.train, gpu_decode=how == "streamed_bytes")
    d = load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=tmp_path / "cache")  # a size: resized
    assert d.train.images.shape == (4, 3, 8, 8)


def test_scan__jpeg_and_netpbm_suffixes_are_images_in_any_case(tmp_path):
    img = _rgb()
    files = {
        "train/a/0.jfif": (img, "JPEG"),
        "train/a/1.JPE": (img, "JPEG"),
        "train/a/2.pbm": (img.convert("1"), "PPM"),
        "train/a/3.PGM": (img.convert("L"), "PPM"),
        "train/a/4.ppm": (img, "PPM"),
        "train/a/5.Pnm": (img, "PPM"),
        "test/a/0.png": (img, "PNG"),
    }
    for rel, (image, fmt) in files.items():
        _tree(tmp_path / "ds", {rel: image}, fmt=fmt)
    d = load_dataset(f"imagefolder:{tmp_path / 'ds'}", cache_dir=tmp_path / "cache")
    assert len(d.train) == 6
    for k, (rel, _) in enumerate(list(files.items())[:6]):
        expected = np.asarray(Image.open(tmp_path / "ds" / rel).convert("RGB")).transpose(2, 0, 1)
        np.testing.assert_array_equal(d.train.images[k].numpy(), expected)


def test_cache_key__holds_the_decoder_version(tmp_path, monkeypatch):
    root = _tree(tmp_path / "ds", _plain(tmp_path))
    key_parts, _ = DATASETS["imagefolder"](str(root), 8, None, False)
    assert imagefolder.DECODER_VERSION in key_parts
    cache = tmp_path / "cache"
    load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr(imagefolder, "DECODER_VERSION", "another-decoder")  # a cache from it is not reused
    load_dataset(f"imagefolder:{root}", image_size=8, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2


def test_scan__imagenets_val_folder_is_the_test_split_where_test_is_missing(tmp_path):
    files = {path.replace("test/", "val/", 1): data for path, data in _plain(tmp_path).items()}
    root = _tree(tmp_path / "ds", files)
    listed = [os.path.relpath(p, root) for p, _ in imagefolder.scan(root)["test"]]
    assert listed and all(p.startswith("val/") for p in listed)
    (root / "val").rename(root / "elsewhere")
    with pytest.raises(DatasetError, match=r"has no test/ folder \(nor val/\)"):
        imagefolder.scan(root)


def test_scan__a_symlink_loop_is_one_line_naming_it(tmp_path):
    """A link back up the tree made the walk grow paths until the OS refused (a raw OSError)."""
    root = _tree(tmp_path / "ds", _plain(tmp_path))
    os.symlink("..", root / "train/a/up")
    with pytest.raises(DatasetError, match=r"train/a/up/a' is '.*train/a' again \(a symlink loop"):
        imagefolder.scan(root)
