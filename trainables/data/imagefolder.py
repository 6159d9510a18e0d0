"""ImageFolder trees (``root/train/<class>/*``, ``root/test/<class>/*``) decoded into uint8 arrays.

Any image size or format PIL reads; every image is converted to RGB and resized to
``size x size`` (aspect ratio not kept, as the study's ``Resize((S, S))``). Class folders are
searched recursively in torchvision's ``make_dataset`` order; hidden entries (a name starting with
``.``: ``.ipynb_checkpoints``, macOS ``._x.jpg``) are skipped. 16-bit greyscale is scaled to 8 bit;
32-bit integer and float images are refused. As torchvision's ``pil_loader``: EXIF orientation is
not applied and alpha is dropped. Decoding runs in a process pool and writes straight into the
cache's memory-mapped arrays, so a dataset larger than RAM decodes without holding it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from trainables.data.cache import Writer

IMAGE_SUFFIXES = {
    *(".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".pbm", ".pgm", ".ppm", ".pnm"),  # Netpbm
}
REQUIRED_SPLITS = ("train", "test")
# Part of the decode-once cache key: bump it whenever decode() gives other pixels for the same file.
# v2: 16-bit greyscale scaled to 8 bit (was clipped), 32-bit / float refused.
DECODER_VERSION = "pil-v2"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class DatasetError(ValueError):
    """A dataset is missing, empty or malformed; the message names the path."""


def scan(root: Path) -> dict[str, list[tuple[str, int]]]:
    """List ``{split: [(file, class_index), ...]}`` and check the layout.

    Raises:
        DatasetError: missing root or split folder, no class folders, a class folder with no
            images, or test classes that differ from train classes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {str(root)!r} does not exist; expected {root}/train/<class>/ and {root}/test/<class>/"
        )
    classes = None
    files: dict[str, list[tuple[str, int]]] = {}
    for split in (*REQUIRED_SPLITS, "unlabeled"):
        folder = root / split
        if split == "test" and not folder.is_dir() and (root / "val").is_dir():
            folder = root / "val"  # ImageNet's layout: its validation split is the test split
        if not folder.is_dir():
            if split == "unlabeled":
                continue
            raise DatasetError(
                f"dataset folder {str(root)!r} has no {split}/ folder"
                + (" (nor val/)" if split == "test" else "")
                + f"; expected {folder}/<class>/<image>"
            )
        if split == "unlabeled":
            files[split] = [(p, -1) for p in _images_in(folder)]
            continue
        split_classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not _hidden(d.name))
        if not split_classes:
            raise DatasetError(
                f"dataset folder {str(folder)!r} has no class folders; expected {folder}/<class>/<image>"
            )
        if classes is not None and split_classes != classes:
            raise DatasetError(f"classes of {str(folder)!r} {split_classes} differ from train's {classes}")
        classes = split_classes
        files[split] = [(p, i) for i, name in enumerate(classes) for p in _images_in(folder / name)]
    return {"classes": classes, **files}  # type: ignore[dict-item]


def _images_in(folder: Path) -> list[str]:
    """Image files under ``folder`` and its subfolders (symlinks followed), hidden entries skipped.

    torchvision's ``make_dataset`` order: folders sorted by path (``sorted(os.walk(...))``), files
    sorted by name within each, so a flat folder is its files sorted by name.
    """
    found: list[tuple[str, list[str]]] = []
    pending = [str(folder)]
    seen = {os.path.realpath(folder)}  # folders walked: a symlink back into them would loop forever
    while pending:  # os.walk(followlinks=True) by hand: DirEntry.is_file() skips a stat per file
        top = pending.pop()
        names = []
        try:
            with os.scandir(top) as entries:  # d_type: 60k files scan in ~0.1 s
                for e in entries:
                    if _hidden(e.name):
                        continue
                    if e.is_dir():
                        real = os.path.realpath(e.path)
                        if real in seen:
                            raise DatasetError(
                                f"folder {e.path!r} is {real!r} again (a symlink loop, or a second link to it); valid: a tree that reaches each folder once"
                            )
                        seen.add(real)
                        pending.append(e.path)
                    elif os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file():
                        names.append(e.name)
        except OSError as err:  # e.g. unreadable
            raise DatasetError(f"cannot list folder {top!r}: {err.strerror or err}") from None
        found.append((top, sorted(names)))
    images = [os.path.join(top, n) for top, names in sorted(found) for n in names]  # str: pathlib costs ~1 s per 60k
    if not images:
        raise DatasetError(
            f"folder {str(folder)!r} has no images in it or its subfolders "
            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}; hidden names skipped)"
        )
    return images


def _hidden(name: str) -> bool:
    """Dot-names: ``.ipynb_checkpoints``, ``.git``, macOS AppleDouble ``._img.jpg`` (not images)."""
    return name.startswith(".")


def fingerprint(listing: dict) -> list:
    """What identifies the decoded content: every file's path, size and mtime."""
    digest = hashlib.sha256()
    for split in (*REQUIRED_SPLITS, "unlabeled"):
        for path, label in listing.get(split, []):
            st = os.stat(path)
            digest.update(f"{split}/{path}/{label}/{st.st_size}/{st.st_mtime_ns}\n".encode())
    return [sum(len(listing.get(s, [])) for s in ("train", "test", "unlabeled")), digest.hexdigest()]


def decode(path: str, size: int, resize: bool = True) -> np.ndarray:
    """One image file -> (3, size, size) uint8 (:func:`to_array`). Raises DatasetError naming the file."""
    try:
        with Image.open(path) as img:
            return to_array(img, path, size, resize)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from None


def to_array(img: Image.Image, path: str, size: int, resize: bool = True) -> np.ndarray:
    """An opened image -> (3, size, size) uint8: RGB (:func:`to_rgb`), bilinear resize.

    Every PIL decode (cached or streamed) ends here, so the two give the same bytes.

    Args:
        img: as ``Image.open`` gives it (pixels not loaded yet).
        path: the file, for error messages.
        size: square side of the result.
        resize: False (``data.image_size`` unset): an image not ``size x size`` is an error.
    """
    if not resize and img.size != (size, size):
        w, h = img.size
        raise DatasetError(
            f"image {path!r} is {w}x{h}, but the folder's native size (its first training image's) "
            f"is {size}x{size}; pass data.image_size (e.g. 32, 64, 96, 224)"
        )
    img = to_rgb(img, path)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img).transpose(2, 0, 1)


def to_rgb(img: Image.Image, path: str) -> Image.Image:
    """8-bit RGB as torchvision's ``pil_loader`` (alpha dropped, EXIF orientation not applied), except
    16-bit greyscale, scaled to 8 bit (``round(v / 257)``) where ``convert`` would clip it at 255.

    Raises:
        DatasetError: 32-bit integer or float images (no scale to assume).
    """
    # PNG and Netpbm hold at most 16 bits a sample, yet Pillow opens a PGM of maxval > 255 (rescaled
    # to 0..65535), and older Pillows a 16-bit PNG, as mode I: 16-bit too.
    if img.mode in SIXTEEN_BIT_MODES or (img.mode == "I" and img.format in ("PNG", "PPM")):
        grey = np.rint(np.asarray(img, dtype=np.float64) / 257)  # no ties: v / 257 is never k + 0.5
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if img.mode in ("I", "F"):
        raise DatasetError(
            f"image {path!r} has mode {img.mode} ({'32-bit or signed 16-bit integer' if img.mode == 'I' else 'float'}); "
            "valid: 8-bit or unsigned 16-bit images (convert it, e.g. scale to 0..255 and save as 8-bit PNG)"
        )
    return img.convert("RGB")


def unreadable(path: str, err: Exception) -> DatasetError:
    """The one-line error for a file PIL cannot open or refuses (a decompression bomb: say how to load it)."""
    if isinstance(err, Image.DecompressionBombError):
        return DatasetError(
            f"cannot read image {path!r}: {str(err).rstrip('.')}; pre-shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS"
        )
    return DatasetError(f"cannot read image {path!r}: {err}")


def _decode_chunk(args: tuple[list[str], int, bool]) -> np.ndarray:
    paths, size, resize = args
    return np.stack([decode(p, size, resize) for p in paths])


def write_imagefolder(
    listing: dict, size: int, writer: Writer, workers: int | None = None, resize: bool = True
) -> dict:
    """Decode every split of ``listing`` (from :func:`scan`) through ``writer``; return meta.

    ``resize`` False (``data.image_size`` unset): an image that is not ``size x size`` is an error.
    """
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        for split in (*REQUIRED_SPLITS, "unlabeled"):
            if split not in listing:
                continue
            entries = listing[split]
            images, labels = writer(split, len(entries), (3, size, size))
            labels[:] = [label for _, label in entries]
            chunk = 512
            jobs = [([p for p, _ in entries[i : i + chunk]], size, resize) for i in range(0, len(entries), chunk)]
            for i, block in enumerate(pool.map(_decode_chunk, jobs)):
                images[i * chunk : i * chunk + len(block)] = block
            images.flush()
            labels.flush()
    return {"classes": listing["classes"]}
