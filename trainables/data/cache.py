"""Decoded datasets on disk: one ``.npy`` per split array, memory-mapped on load.

A dataset is decoded once into ``<cache_dir>/<key>/`` (``train_images.npy`` (N, C, H, W) uint8,
``train_labels.npy`` (N,) int64, the same for ``test``/``unlabeled``, and ``meta.json``). Loading
maps the files; a split whose bytes fit the memory budget is then read into RAM, a larger one
stays memory-mapped and is read batch by batch (the "streaming" path for ImageNet-scale sets).
Writes go to a temporary folder renamed into place, so an interrupted decode never leaves a
half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

SPLITS = ("train", "test", "unlabeled")
DEFAULT_CACHE_DIR = Path(os.environ.get("SBL_CACHE_DIR", Path.home() / ".cache" / "spatial-bias-lab"))

# Fills preallocated split arrays: writer(name, n, (C, H, W)) -> (images, labels) to fill.
Writer = Callable[[str, int, tuple[int, int, int]], tuple[np.ndarray, np.ndarray]]


def cache_key(*parts: object) -> str:
    """Stable short hash of the parts (json-encoded); never Python's salted ``hash()``."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_arrays(
    cache_dir: Path, key: str, build: Callable[[Writer], dict], memory_budget_bytes: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Return ``{split: (images, labels)}`` and the meta dict, decoding on the first call.

    Args:
        cache_dir: root of the cache.
        key: folder name for this dataset and its settings.
        build: fills the cache through the writer it gets and returns meta (classes, ...).
        memory_budget_bytes: splits whose images are larger stay memory-mapped.
    """
    folder = Path(cache_dir) / key
    if not (folder / "meta.json").exists():
        _write(folder, build)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {}
    for split in SPLITS:
        path = folder / f"{split}_images.npy"
        if path.exists():
            # Copy-on-write maps give writable arrays (torch.from_numpy needs one) that never
            # touch the file.
            images = np.load(path, mmap_mode="c")
            if images.nbytes <= memory_budget_bytes:
                images = np.load(path)
            arrays[split] = (images, np.load(folder / f"{split}_labels.npy"))
    return arrays, meta


def _write(folder: Path, build: Callable[[Writer], dict]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:

        def writer(split: str, n: int, chw: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
            images = np.lib.format.open_memmap(tmp / f"{split}_images.npy", "w+", np.uint8, (n, *chw))
            labels = np.lib.format.open_memmap(tmp / f"{split}_labels.npy", "w+", np.int64, (n,))
            return images, labels

        meta = build(writer)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_arrays(writer: Writer, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write in-memory ``{split: (images (N, C, H, W) uint8, labels (N,))}`` through a writer."""
    for split, (images, labels) in arrays.items():
        out_images, out_labels = writer(split, len(images), images.shape[1:])
        out_images[:] = images
        out_labels[:] = labels
        out_images.flush()
        out_labels.flush()
