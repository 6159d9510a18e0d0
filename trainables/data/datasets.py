"""The dataset registry: every dataset becomes uint8 tensors ``(N, C, H, W)`` + int64 labels.

Names: ``shapes`` (ten classes of line drawings at random position, scale, rotation and colour,
drawn from a seed: the main job's dataset, see :mod:`trainables.data.shapes`), ``digits``
(scikit-learn's bundled 8x8 digits upsampled to RGB; no download either), ``cifar10``, ``cifar100``, ``stl10`` (torchvision, downloaded when online) and
``imagefolder:<path>`` (any folder with ``train/<class>/`` and ``test/<class>/``). Each is decoded
once and cached (see :mod:`trainables.data.cache`), except an image folder too large for the memory
budget (or with ``streaming`` true): that one streams its files batch by batch
(:mod:`trainables.data.stream`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from trainables.data import imagefolder, shapes
from trainables.data.cache import DEFAULT_CACHE_DIR, Writer, cache_key, cached_arrays, write_arrays
from trainables.data.imagefolder import DatasetError
from trainables.data.stream import StreamedImages, default_workers, resize_u8, stream_batches

DEFAULT_MEMORY_BUDGET_GB = 8.0
STREAMING_CHOICES = ("auto", "true", "false")
STREAMED_STATS_IMAGES = 10_000  # normalisation sample of a streamed split: each image is a file decode
SHAPES_TRAIN_PER_CLASS, SHAPES_TEST_PER_CLASS = 200, 200


@dataclasses.dataclass(frozen=True)
class Split:
    """One split. ``images``: (N, C, H, W) uint8, in RAM or memory-mapped, or image files decoded
    batch by batch (:class:`StreamedImages`); ``labels``: (N,) int64 (-1 where unlabeled)."""

    images: Tensor | StreamedImages
    labels: Tensor
    in_memory: bool = True  # False: memory-mapped or streamed, read batch by batch

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, StreamedImages)

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A decoded dataset: train and test splits (and an unlabeled one for SSL, if any)."""

    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    unlabeled: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the stored images."""
        return tuple(self.train.images.shape[-2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    def mean_std(self, max_images: int = 50_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] units over the training split.

        Exact over the whole split up to ``max_images`` images, else over a uniform random
        sample of that many (a fixed seed: every trial gets the same numbers). Never its first
        images: an ImageFolder tree is stored class by class, so those are one or two classes. A
        streamed split samples at most ``STREAMED_STATS_IMAGES`` (each one a file to decode).
        """
        n = len(self.train)
        streamed = self.train.streamed
        max_images = min(max_images, STREAMED_STATS_IMAGES) if streamed else max_images
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_images].sort().values
        total = torch.zeros(2, self.channels, dtype=torch.float64)
        chunks = list(keep.split(256 if streamed else 4096))
        if streamed:  # worker processes decode; the GPU would only save a little here
            blocks = stream_batches(self.train.images, chunks, "cpu", gpu_decode=False)
        else:
            blocks = (self.train.images[chunk] for chunk in chunks)
        for block in blocks:
            x = block.to(torch.float64).div_(255).transpose(0, 1).flatten(1)
            total += torch.stack([x.sum(1), x.square().sum(1)])
        count = len(keep) * self.image_size[0] * self.image_size[1]
        mean = total[0] / count
        std = ((total[1] - count * mean.square()) / (count - 1)).clamp_min(0).sqrt()
        return tuple(mean.tolist()), tuple(std.tolist())


# A source returns (cache key parts, builder); builder(writer) fills the cache and returns meta.
Source = Callable[[str, int | None, Path | None, bool], tuple[list, Callable[[Writer], dict]]]
DATASETS: dict[str, Source] = {}


def register_dataset(name: str) -> Callable[[Source], Source]:
    """Decorator registering a dataset source under ``name``; raises on a duplicate name."""

    def wrap(fn: Source) -> Source:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return wrap


def valid_names() -> str:
    return ", ".join(f"{n}:<path>" if n == "imagefolder" else n for n in sorted(DATASETS))


def split_spec(spec: str) -> tuple[str, str]:
    """``"imagefolder:/data/x"`` -> ("imagefolder", "/data/x"); ``"cifar10"`` -> ("cifar10", "")."""
    name, _, arg = spec.partition(":")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {spec!r}; valid: {valid_names()}")
    if name == "imagefolder" and not arg:
        raise DatasetError(f"dataset {spec!r} needs a folder: imagefolder:<path>")
    return name, arg


def absolute_spec(spec: str) -> str:
    """``imagefolder:<relative>`` -> ``imagefolder:<absolute>`` (Ray trials run in another cwd)."""
    name, arg = split_spec(spec)
    return f"{name}:{Path(arg).expanduser().resolve()}" if name == "imagefolder" else spec


def check_dataset(spec: str, data_dir: str | Path | None = None) -> None:
    """Cheap validation for sweeps (no decoding): the name exists and an image folder is well formed."""
    name, arg = split_spec(spec)
    if name == "imagefolder":
        imagefolder.scan(Path(arg).expanduser())


def load_dataset(
    spec: str,
    *,
    image_size: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    download: bool = True,
    streaming: bool | str = "auto",
    stream_workers: int | None = None,
) -> ImageDataset:
    """Load a dataset by spec, decoding and caching it on first use, or streaming its files.

    Args:
        spec: a registered name or ``imagefolder:<path>``.
        image_size: square side to resize to (None: the dataset's native size; an image folder
            then needs every image the size of its first training image, which must be square).
        data_dir: where torchvision datasets live or are downloaded to.
        cache_dir: decoded-array cache (default ``$SBL_CACHE_DIR`` or ~/.cache/spatial-bias-lab).
        memory_budget_gb: splits larger than this stay memory-mapped and stream from disk.
        download: let torchvision sources download when the files are missing.
        streaming: ``auto`` streams an image folder whose decoded splits together exceed
            ``memory_budget_gb``; true streams an image folder always; false decodes once.
        stream_workers: worker processes that decode a streamed split (None: up to 8 cores).
    """
    name, arg = split_spec(spec)
    mode = streaming_mode(streaming)
    if name == "imagefolder" and mode != "false":
        listing = imagefolder.scan(Path(arg).expanduser().resolve())
        size = image_size or _native_size(listing)
        if mode == "true" or decoded_bytes(listing, size) > memory_budget_gb * 2**30:
            workers = default_workers() if stream_workers is None else stream_workers
            return _streamed(spec, listing, size, workers, resize=image_size is not None)
    elif mode == "true":
        raise DatasetError(
            f"data.streaming true is invalid for dataset {spec!r}, which is not a folder of image files; "
            "valid: auto or false, or an imagefolder:<path> dataset"
        )
    key_parts, build = DATASETS[name](arg, image_size, Path(data_dir).expanduser() if data_dir else None, download)
    key = f"{name}-{cache_key(name, image_size, key_parts)}"
    arrays, meta = cached_arrays(Path(cache_dir or DEFAULT_CACHE_DIR), key, build, int(memory_budget_gb * 2**30))
    splits = {
        s: Split(torch.from_numpy(x), torch.from_numpy(y), in_memory=not isinstance(x, np.memmap))
        for s, (x, y) in arrays.items()
    }
    return ImageDataset(name=spec, classes=tuple(meta["classes"]), **splits)


def streaming_mode(value: bool | str) -> str:
    """``data.streaming`` as ``auto``, ``true`` or ``false`` (YAML gives bools); ValueError otherwise."""
    mode = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else str(value).lower()
    if mode not in STREAMING_CHOICES:
        raise ValueError(f"data.streaming {value!r} is invalid; valid: {', '.join(STREAMING_CHOICES)}")
    return mode


def decoded_bytes(listing: dict, size: int) -> int:
    """Bytes of every split of an image folder decoded at ``size``: (N, 3, size, size) uint8."""
    return sum(len(listing.get(s, [])) for s in ("train", "test", "unlabeled")) * 3 * size * size


def _streamed(spec: str, listing: dict, size: int, workers: int, resize: bool = True) -> ImageDataset:
    """An image folder (``imagefolder.scan``'s listing) as lazy splits over its files: nothing
    decoded, nothing cached. ``resize`` False: images not ``size x size`` are refused as they are read."""
    splits = {
        s: Split(
            StreamedImages(tuple(p for p, _ in listing[s]), size, workers, resize),
            torch.tensor([label for _, label in listing[s]], dtype=torch.int64),
            in_memory=False,
        )
        for s in ("train", "test", "unlabeled")
        if s in listing
    }
    return ImageDataset(name=spec, classes=tuple(listing["classes"]), **splits)


def _resize_u8(images: np.ndarray, size: int | None) -> np.ndarray:
    """(N, C, h, w) uint8 -> (N, C, size, size) uint8 (``stream.resize_u8``); None: unchanged."""
    return images if size is None else resize_u8(torch.from_numpy(images), size).numpy()


@register_dataset("digits")
def _digits(arg: str, image_size: int | None, data_dir: Path | None, download: bool):
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16), upsampled to RGB; 80/20 stratified split."""

    def build(writer: Writer) -> dict:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        gray = (digits.images * (255 / 16)).round().astype(np.uint8)[:, None]  # (N, 1, 8, 8)
        rgb = _resize_u8(np.repeat(gray, 3, axis=1), image_size or 32)
        idx_train, idx_test = train_test_split(
            np.arange(len(rgb)), test_size=0.2, random_state=0, stratify=digits.target
        )
        write_arrays(
            writer,
            {"train": (rgb[idx_train], digits.target[idx_train]), "test": (rgb[idx_test], digits.target[idx_test])},
        )
        return {"classes": [str(i) for i in range(10)]}

    return ["sklearn-digits-v1"], build


@register_dataset("shapes")
def _shapes(arg: str, image_size: int | None, data_dir: Path | None, download: bool):
    """Line drawings whose class lives in spatial structure (:mod:`trainables.data.shapes`):
    2,000 training and 2,000 test images, 32 px (``image_size`` draws on a larger or smaller canvas)."""
    size = image_size or shapes.SIZE

    def build(writer: Writer) -> dict:
        # Different seeds: no test image repeats a training one.
        write_arrays(
            writer,
            {
                "train": shapes.render(SHAPES_TRAIN_PER_CLASS, seed=0, size=size),
                "test": shapes.render(SHAPES_TEST_PER_CLASS, seed=1, size=size),
            },
        )
        return {"classes": list(shapes.CLASSES)}

    return [shapes.VERSION, size, SHAPES_TRAIN_PER_CLASS, SHAPES_TEST_PER_CLASS], build


@register_dataset("imagefolder")
def _imagefolder(arg: str, image_size: int | None, data_dir: Path | None, download: bool):
    root = Path(arg).expanduser().resolve()
    listing = imagefolder.scan(root)
    size = image_size or _native_size(listing)

    def build(writer: Writer) -> dict:
        # image_size unset: every image must be `size` already (the cache key holds image_size).
        return imagefolder.write_imagefolder(listing, size, writer, resize=image_size is not None)

    return [imagefolder.DECODER_VERSION, str(root), size, imagefolder.fingerprint(listing)], build


def _native_size(listing: dict) -> int:
    """Side of an image folder's first training image (``image_size`` unset); DatasetError if not square."""
    path = listing["train"][0][0]
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:  # as imagefolder.decode
        raise imagefolder.unreadable(path, err) from None
    if w != h:
        raise DatasetError(f"image {path!r} is {w}x{h}, not square; pass data.image_size (e.g. 32, 64, 96, 224)")
    return w


def _torchvision_source(cls: type, splits: dict[str, dict]):
    """Sources through torchvision: {split: constructor kwargs}. Images come out (N, C, H, W)."""

    def source(arg: str, image_size: int | None, data_dir: Path | None, download: bool):
        root = data_dir or Path.home() / "data" / cls.__name__.lower()

        def build(writer: Writer) -> dict:
            arrays, classes = {}, None
            for split, kwargs in splits.items():
                try:
                    ds = cls(root=str(root), download=download, **kwargs)
                except RuntimeError as err:
                    raise DatasetError(
                        f"{cls.__name__} not found under {str(root)!r} ({err}); pass data_dir or allow download"
                    ) from None
                except OSError as err:  # the download failed (offline: URLError)
                    reason = getattr(err, "reason", None) or err.strerror or err
                    raise DatasetError(
                        f"{cls.__name__} is not under {str(root)!r} and its download failed ({reason}); "
                        "valid: --data-dir (data.data_dir) with the dataset, or a machine online"
                    ) from None
                data = np.asarray(ds.data)
                data = data if data.shape[1] in (1, 3) else data.transpose(0, 3, 1, 2)
                labels = np.asarray(getattr(ds, "targets", None) or getattr(ds, "labels", None))
                arrays[split] = (_resize_u8(np.ascontiguousarray(data), image_size), labels.astype(np.int64))
                classes = classes or list(getattr(ds, "classes", []))
            write_arrays(writer, arrays)
            return {"classes": classes}

        return [cls.__name__, str(root)], build

    return source


register_dataset("cifar10")(_torchvision_source(tvd.CIFAR10, {"train": {"train": True}, "test": {"train": False}}))
register_dataset("cifar100")(_torchvision_source(tvd.CIFAR100, {"train": {"train": True}, "test": {"train": False}}))
register_dataset("stl10")(
    _torchvision_source(
        tvd.STL10, {"train": {"split": "train"}, "test": {"split": "test"}, "unlabeled": {"split": "unlabeled"}}
    )
)
