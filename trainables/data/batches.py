"""From a decoded split to training batches: corruption -> augmentation -> normalisation.

Fixed corruptions (the study's seed-42 shuffles, gamma, blur, JPEG) are applied once to the
whole in-memory split; per-image ones (``randglo``, ``randloc``, shot noise) and every corruption
of a memory-mapped or streamed split run per batch on the training device. No DataLoader and no
workers for a split in memory: it is one uint8 tensor, indexed by a random permutation each epoch
(airbench). A streamed split (image files, :mod:`trainables.data.stream`) is indexed by the same
permutation, and worker processes decode its batches in that order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from corruptions import Corruption, parse
from trainables.data.augment import Augmentation, augment_rows, view_recipes
from trainables.data.augment_ops import constant, move_to, resize
from trainables.data.datasets import Split
from trainables.data.stream import stream_batches

CHUNK = 4096


def corrupt_split(split: Split, corruption: Corruption, generator: torch.Generator | None = None) -> Split:
    """Apply a corruption to every image of an in-memory split, in chunks.

    Returns:
        a new in-memory Split with images (N, C, H, W) uint8 corrupted.
    """
    if corruption == parse("ori"):
        return split
    out = torch.empty_like(split.images)
    for start in range(0, len(split), CHUNK):
        out[start : start + CHUNK] = corruption(split.images[start : start + CHUNK], generator)
    return Split(out, split.labels, in_memory=True)


def plan_corruption(split: Split, corruption: Corruption) -> tuple[Split, Corruption]:
    """Pre-apply a fixed corruption where possible; return (split, what is left to do per batch)."""
    if corruption.fixed and split.in_memory:
        return corrupt_split(split, corruption), parse("ori")
    return split, corruption


def to_device(split: Split, device: torch.device | str) -> Split:
    """Move an in-memory split to the training device (streamed splits stay on the host)."""
    if not split.in_memory:
        return split
    return Split(split.images.to(device), split.labels.to(device), in_memory=True)


def index_batches(
    n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True, drop_last: bool = True
) -> Iterator[Tensor]:
    """Yield (B,) int64 index batches over ``range(n)``, a new order per call when shuffling."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def gather(split: Split, index: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """(B,C,H,W) uint8 images and (B,) labels for ``index`` on ``device``.

    Streamed splits read sorted indices (sequential disk access) and restore the order after.
    """
    if split.in_memory:
        index = move_to(index, split.images.device)
        return split.images[index].to(device, non_blocking=True), move_to(split.labels[index], device)
    order = index.argsort()
    inverse = order.argsort()
    images = split.images[index[order]][inverse]
    return images.to(device, non_blocking=True), split.labels[index].to(device)


def load_batches(
    split: Split, batches: Iterable[Tensor], device: torch.device | str
) -> Iterator[tuple[Tensor, Tensor]]:
    """(B, C, H, W) uint8 images and (B,) labels on ``device`` for each index batch, in order.

    A streamed split draws every index batch up front (the workers read ahead); the generator
    behind ``batches`` is consumed exactly as by an in-memory split, so the order is the same.
    """
    if not split.streamed:
        for index in batches:
            yield gather(split, index, device)
        return
    batches = list(batches)
    for index, images in zip(batches, stream_batches(split.images, batches, device), strict=True):
        yield images, move_to(split.labels[index], device)


def take(split: Split, index: Tensor, device: torch.device | str) -> Tensor:
    """(B, C, H, W) uint8 images at ``index`` (B,) on ``device``, from any split."""
    return next(load_batches(split, [index], device))[0]


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Per-batch work after indexing: corruption, ``n_views`` augmented views, normalisation.

    View ``i`` uses the ``i``-th recipe of a ``PerView`` augmentation, or the one recipe for every
    view; the views draw from the augmentation generator in order (view 1, then view 2).
    ``resize_to``: the side each normalised view is then resized to (``data.input_size`` for recipes
    that do not resample, see ``trainables.data.augment.view_augmentation``); per batch, so no
    resized copy of a split is ever stored.
    """

    corruption: Corruption
    augment: Augmentation
    n_views: int
    mean: Sequence[float]
    std: Sequence[float]
    resize_to: int | None = None

    def __post_init__(self) -> None:
        view_recipes(self.augment, self.n_views)  # too few per-view recipes: raise now, not mid-epoch

    def __call__(
        self, images: Tensor, gens: dict[str, torch.Generator], batch: int | None = None, rows: slice | None = None
    ) -> list[Tensor]:
        """(B, C, H, W) uint8 -> n_views x (B, C, H', W') float32, normalised (H' = W' = ``resize_to`` if set).

        With ``rows`` (a data-parallel rank's shard of a batch of ``batch`` images) the views are
        rows ``rows`` of the whole batch's, every random number drawn as for the whole batch.
        ``images`` is then the whole batch, or only those rows where the corruption is ``fixed``
        (it needs no other image); augmentation and resizing run on the rows alone.
        """
        images = self.corruption(images, gens["corruption"])
        if rows is not None and images.shape[0] == batch:
            images = images[rows]
        elif rows is not None and not self.corruption.fixed:
            raise ValueError(f"{self.corruption} draws for every image: give it the whole batch of {batch}")
        mean = constant(self.mean, torch.float32, images.device).view(1, -1, 1, 1)
        std = constant(self.std, torch.float32, images.device).view(1, -1, 1, 1)
        g = gens["augment"]
        views = [
            recipe(images, g) if rows is None else augment_rows(recipe, images, g, batch, rows)
            for recipe in view_recipes(self.augment, self.n_views)
        ]
        views = [(v - mean) / std for v in views]
        # Normalising first is the same (resize weights sum to 1) and, upsampling, touches the smaller tensor.
        return views if self.resize_to is None else [resize(v, self.resize_to) for v in views]


def train_batches(
    split: Split,
    pipeline: Pipeline,
    batch_size: int,
    gens: dict[str, torch.Generator],
    device: torch.device | str,
    rows: slice | None = None,
) -> Iterator[tuple[list[Tensor], Tensor]]:
    """One epoch of ``(views, labels)``: views n_views x (B, C, H, W) float, labels (B,) int64.

    ``rows``: a data-parallel rank's rows of every batch (``trainables.distributed.batch_rows``).
    The rank then gets rows ``rows`` of the single process's views and labels, and loads (decodes,
    for a streamed split), corrupts and augments only those; only a corruption that draws per image
    needs the whole batch loaded and corrupted first.
    """
    batches = index_batches(len(split), batch_size, gens["order"])
    if rows is None:
        for images, labels in load_batches(split, batches, device):
            yield pipeline(images, gens), labels
        return
    whole = min(batch_size, len(split))  # every batch's size: a partial last batch is dropped
    early = pipeline.corruption.fixed
    for images, labels in load_batches(split, (index[rows] for index in batches) if early else batches, device):
        yield pipeline(images, gens, whole, rows), labels if early else labels[rows]


def eval_batches(
    split: Split,
    corruption: Corruption,
    batch_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Evaluation order: every image once, corrupted, as (B, C, H, W) uint8 and (B,) labels."""
    for images, labels in load_batches(split, index_batches(len(split), batch_size, None, False, False), device):
        yield corruption(images, generator), labels
