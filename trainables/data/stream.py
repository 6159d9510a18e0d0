"""Streaming an image folder too large to decode once: files -> (B, 3, S, S) uint8 batches.

A streamed split holds file paths, not pixels (:class:`StreamedImages`). Each batch of indices
(drawn exactly as for an in-memory split) is read by DataLoader worker processes, one batch per
task, and comes back in order:

* on a CPU device the workers decode and resize with :func:`trainables.data.imagefolder.decode`,
  the function that fills the decode-once cache, so a streamed batch equals the cached one byte
  for byte (16-bit greyscale scaled, 32-bit and float refused, as there);
* on a CUDA device the workers only read the bytes, and the JPEGs are decoded on the GPU in one
  call (``torchvision.io.decode_jpeg(list, device="cuda")``) and resized there (antialiased
  bilinear). Files that are not JPEG, or that nvJPEG refuses (CMYK), fall back to the CPU decode.

Resizing happens here, before anything else: the fixed corruption and the augmentation then run
per batch on the training device (:mod:`trainables.data.batches`), the study's order for
ImageNet (resize to 256, corrupt, then crop and augment).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainables.data.imagefolder import decode, to_array, unreadable

JPEG_MAGIC = b"\xff\xd8\xff"
MAX_AUTO_WORKERS = 8
PREFETCH_BATCHES = 4  # per worker: enough to hide a slow batch, little memory (4 x 256 x 196 KB at 256 px)


def default_workers() -> int:
    """Worker processes when ``data.stream_workers`` is null: the cores this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_AUTO_WORKERS, cores)


@dataclasses.dataclass(frozen=True)
class StreamedImages:
    """A lazy ``(N, 3, size, size)`` uint8 image array over image files (a few bytes per image in RAM).

    Indexing (an int, a slice, a list or an int64 tensor) decodes those images in this process:
    meant for a handful (sample renders, the alignment views). Training and evaluation read
    through :func:`stream_batches`, with worker processes.

    Attributes:
        paths: one file per image, in the split's order.
        size: square side every image is resized to.
        workers: DataLoader worker processes for :func:`stream_batches` (0: in this process).
        resize: False (``data.image_size`` unset, ``size`` the native one): an image of another
            size is an error instead of being resized.
    """

    paths: tuple[str, ...]
    size: int
    workers: int = 0
    resize: bool = True

    dtype = torch.uint8
    device = torch.device("cpu")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.size, self.size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, int):
            return decode_files(self.paths[index : index + 1], self.size, self.resize)[0]
        return decode_files(self._pick(index), self.size, self.resize)

    def take(self, index) -> StreamedImages:
        """The images at ``index`` (slice, list or int64 tensor) as another lazy array; nothing is decoded."""
        return dataclasses.replace(self, paths=self._pick(index))

    def _pick(self, index) -> tuple[str, ...]:
        if isinstance(index, slice):
            return self.paths[index]
        return tuple(self.paths[i] for i in torch.as_tensor(index).reshape(-1).tolist())


def decode_files(paths: Sequence[str], size: int, resize: bool = True) -> Tensor:
    """Files -> (B, 3, size, size) uint8 through the cache's decode (PIL, bilinear, antialiased);
    ``resize`` False: a file not ``size x size`` is an error."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    view = out.numpy()
    for i, path in enumerate(paths):
        view[i] = decode(path, size, resize)  # PIL's buffer is read-only: copied straight into the batch
    return out


def read_files(paths: Sequence[str]) -> list[Tensor]:
    """Files -> their bytes, one (n_bytes,) uint8 tensor each (what ``decode_jpeg`` takes)."""
    out = []
    for path in paths:
        try:
            out.append(torch.from_numpy(np.fromfile(path, dtype=np.uint8)))
        except OSError as err:
            raise unreadable(path, err) from None
    return out


def decode_bytes(
    data: Sequence[Tensor], paths: Sequence[str], size: int, device: torch.device | str, resize: bool = True
) -> Tensor:
    """File bytes -> (B, 3, size, size) uint8 on ``device``: JPEGs in one ``decode_jpeg`` call there.

    Resizing runs on ``device`` too (float, antialiased bilinear, rounded), so values may differ by
    a level or two from :func:`decode_files` (PIL's resize and libjpeg's IDCT); the images are the same.
    ``resize`` False: a file not ``size x size`` is an error, as in :func:`decode_files`.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.empty(len(data), 3, size, size, dtype=torch.uint8, device=device)
    jpeg = [i for i, d in enumerate(data) if bytes(d[:3].tolist()) == JPEG_MAGIC]
    decoded: dict[int, Tensor] = {}
    try:
        batch = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device) if jpeg else []
        decoded = dict(zip(jpeg, batch, strict=True))
    except RuntimeError:  # one bad file fails the batch call: decode one by one, the rest on the CPU
        for i in jpeg:
            try:
                decoded[i] = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass
    for i in range(len(data)):
        if i in decoded and (resize or tuple(decoded[i].shape[-2:]) == (size, size)):
            out[i] = resize_u8(decoded[i], size)
        else:  # PNG and friends, CMYK JPEGs, the wrong size: PIL, exactly as the decode-once cache
            out[i] = _decode_pil_bytes(data[i], paths[i], size, resize).to(device)
    return out


def resize_u8(images: Tensor, size: int) -> Tensor:
    """(..., C, h, w) uint8 -> (..., C, size, size) uint8, antialiased bilinear on the images' device:
    every resize of a decoded image (in memory, cached or streamed) is this one."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    flat = images.reshape(-1, *images.shape[-3:]).float()
    x = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).reshape(*images.shape[:-2], size, size)


def _decode_pil_bytes(data: Tensor, path: str, size: int, resize: bool = True) -> Tensor:
    """(n_bytes,) uint8 file bytes -> (3, size, size) uint8 through the cache's PIL decode."""
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            return torch.from_numpy(to_array(img, path, size, resize).copy())
    except (OSError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from None


class _BatchReader(Dataset):
    """Item ``i`` is batch ``i``: decoded (B, 3, S, S) uint8, or, when ``raw``, the files' bytes as one
    (total,) uint8 tensor, the (B,) byte counts and the paths. One tensor, not one per file: each
    tensor from a worker holds a file descriptor until it is consumed, and with 8 workers and 256-file
    batches that exhausted a 1024-descriptor limit."""

    def __init__(self, images: StreamedImages, batches: Sequence[Tensor], raw: bool) -> None:
        self.paths, self.size, self.resize, self.raw = images.paths, images.size, images.resize, raw
        self.batches = [b.tolist() for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        paths = [self.paths[j] for j in self.batches[i]]
        if not self.raw:
            return decode_files(paths, self.size, self.resize)
        data = read_files(paths)
        return torch.cat(data), torch.tensor([len(d) for d in data]), paths


def stream_batches(
    images: StreamedImages, batches: Sequence[Tensor], device: torch.device | str, gpu_decode: bool | None = None
) -> Iterator[Tensor]:
    """Yield the images of each index batch, in order, as (B, 3, S, S) uint8 on ``device``.

    Args:
        images: the lazy split.
        batches: (B,) int64 index batches, all known up front (the workers read ahead).
        device: where the batches go (and, for CUDA, where JPEGs are decoded).
        gpu_decode: decode from bytes on ``device``; None: where ``device`` is CUDA.
    """
    device = torch.device(device)
    raw = device.type == "cuda" if gpu_decode is None else gpu_decode
    workers = min(images.workers, len(batches))
    loader = DataLoader(
        _BatchReader(images, batches, raw),
        batch_size=None,  # an item is already a batch
        num_workers=workers,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
    )
    for item in loader:
        if raw:
            joined, lengths, paths = item
            yield decode_bytes(joined.split(lengths.tolist()), paths, images.size, device, images.resize)
        else:
            yield item.to(device, non_blocking=True)
