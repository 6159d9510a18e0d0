"""Construction of a trial's parts from its config: device, data, pipeline, model, optimizer."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import timm
import torch
from torch import Tensor

from corruptions import parse
from trainables.backbone import architecture, build_backbone, is_vit, pretrained_mean_std, vit_input_size
from trainables.config import DataConfig, TrialConfig
from trainables.data.augment import normalize, to_float, view_augmentation
from trainables.data.augment_ops import resize
from trainables.data.batches import Pipeline, plan_corruption, to_device
from trainables.data.datasets import ImageDataset, Split, load_dataset
from trainables.distributed import sync_batchnorm
from trainables.methods import Method, build_params, method_class
from trainables.optim import build_optimizer
from trainables.seeding import derive_seed


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when ``torch.cuda.is_available()``, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"system.device {name!r} is invalid here: no CUDA device; valid: auto, cpu")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere oneDNN emulates bf16: on an AVX2-only AMD EPYC a MoCo-v2 step ran
    at 0.11x its fp32 speed (``benchmarks/train_step.py``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)  # pre-Ampere GPUs emulate it
    if device.type != "cpu":
        return False
    try:  # NOTE: private helpers of torch.cpu (torch >= 2.1); the public API has no such query
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``native_bf16(device)``, else ``fp32``; ``bf16``/``fp32`` as given."""
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def autocast(cfg: TrialConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``resolve_precision`` says bf16, else no autocast (fp32)."""
    if resolve_precision(cfg.system.precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def first_per_class(labels: Tensor, n: int | None) -> Tensor:
    """Indices (sorted) of the first ``n`` items of every class in ``labels`` (N,); all of them for None."""
    if n is None:
        return torch.arange(len(labels))
    return torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in labels.unique()]).sort().values


def per_class_subset(split: Split, n: int | None) -> Split:
    """The first ``n`` images of every class (stored order), or the split itself."""
    if n is None:
        return split
    keep = first_per_class(split.labels, n)
    if split.streamed:  # a subset of the files, still streamed
        return Split(split.images.take(keep), split.labels[keep], in_memory=False)
    return Split(split.images[keep], split.labels[keep], in_memory=True)


def pretraining_split(cfg: TrialConfig, data: ImageDataset) -> tuple[Split, int | None]:
    """The split a trial pretrains on and the per-class cap it takes of it (None: all of it): the
    unlabeled split for a method trained without labels where there is one, else the training split,
    cut to data.labels_per_class for a method trained with labels."""
    if trains_unlabeled(cfg, data):
        return data.unlabeled, None  # type: ignore[return-value]
    return data.train, cfg.data.labels_per_class if method_class(cfg.method).uses_labels else None


def trains_unlabeled(cfg: TrialConfig, data: ImageDataset) -> bool:
    """The trial pretrains on the unlabeled split: its method trains without labels, and there is one."""
    return data.unlabeled is not None and not method_class(cfg.method).uses_labels


def check_batch_fits(cfg: TrialConfig, data: ImageDataset) -> None:
    """Raise ValueError (one line) where a training batch holds more images than the split the trial
    pretrains on (``build_data``'s: the unlabeled split, or the training split after
    data.train_per_class and, for label-using methods, data.labels_per_class), counted from the
    labels alone so that a sweep can check every trial before the first starts. A trial of
    optim.epochs 0 trains nothing and always fits."""
    if cfg.optim.epochs == 0:
        return
    split, cap = pretraining_split(cfg, data)
    # train_per_class cuts the training split only (``subset``); a trial gets it already cut.
    caps = [c for c in (cap, None if trains_unlabeled(cfg, data) else cfg.data.train_per_class) if c]
    per_class = torch.bincount(split.labels[split.labels >= 0])
    n = int(per_class.clamp(max=min(caps)).sum()) if caps else len(split)
    if cfg.optim.batch_size > n:
        raise ValueError(
            f"optim.batch_size {cfg.optim.batch_size} is larger than the {n} training images; valid: <= {n}"
        )


def load_data(cfg: DataConfig) -> ImageDataset:
    """Load (from cache) and subset the dataset named in the config."""
    data = load_dataset(
        cfg.dataset,
        image_size=cfg.image_size,
        data_dir=cfg.data_dir,
        cache_dir=cfg.cache_dir,
        memory_budget_gb=cfg.memory_budget_gb,
        streaming=cfg.streaming,
        stream_workers=cfg.stream_workers,
    )
    return subset(data, cfg)


def subset(data: ImageDataset, cfg: DataConfig) -> ImageDataset:
    return dataclasses.replace(
        data,
        train=per_class_subset(data.train, cfg.train_per_class),
        test=per_class_subset(data.test, cfg.test_per_class),
    )


Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std) in [0, 1] units
# data.normalization -> the views' (mean, std)
NORMALIZATIONS: dict[str, Callable[[TrialConfig, ImageDataset], Stats]] = {
    "dataset": lambda cfg, data: data.mean_std(),
    # NOTE: solo-learn's ImageNet constants, std 0.228 where torchvision has 0.229: what the study's
    # in100 scripts normalise with (solo/data/pretrain_dataloader.py ImagenetTransform).
    "imagenet": lambda cfg, data: ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
    "pretrained": lambda cfg, data: pretrained_mean_std(cfg.model.backbone),
}


def normalization(cfg: TrialConfig, data: ImageDataset) -> Stats:
    """The per-channel (mean, std) every view and evaluation image is normalised with
    (``data.normalization``).

    Raises:
        ValueError: one line, when the statistics' channels are not the dataset's.
    """
    name = cfg.data.normalization
    mean, std = NORMALIZATIONS[name](cfg, data)
    if len(mean) != data.channels:
        raise ValueError(
            f"data.normalization {name!r} has {len(mean)} channels, the dataset {data.channels}; valid: dataset"
        )
    return mean, std


@dataclasses.dataclass
class TrialData:
    """The splits a trial trains and evaluates on, already placed and pre-corrupted."""

    train: Split  # pretraining corruption pre-applied where fixed
    pipeline: Pipeline  # what is left per batch: random corruption, augmentation, normalisation
    eval_train: Split  # evaluation-corrupted (fixed part) training split, for the kNN bank/probe
    eval_test: Split
    eval_corruption: object  # per-batch part of the evaluation corruption
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def build_data(cfg: TrialConfig, data: ImageDataset, device: torch.device) -> TrialData:
    """Apply the corruption plan and build the batch pipeline (data flows one way from here)."""
    h, w = data.image_size
    for spec in (cfg.data.corruption, cfg.eval_corruption):
        parse(spec).check(h, w)
    for key, side in (("data.crop_size", cfg.data.crop_size), ("data.eval_crop_size", cfg.data.eval_crop_size)):
        if side is not None and not 0 < side <= min(h, w):
            raise ValueError(f"{key} {side!r} is invalid for {h}x{w} images; valid: 1 to {min(h, w)}, or null")
    # What the network sees: data.input_size, else training views of data.crop_size and evaluation
    # crops of data.eval_crop_size.
    if cfg.data.input_size is not None:
        check_input_size(cfg, (cfg.data.input_size, cfg.data.input_size))
    for side in (cfg.data.crop_size, cfg.data.eval_crop_size) if cfg.data.input_size is None else ():
        check_input_size(cfg, (side, side) if side else (h, w))
    pretrain = per_class_subset(*pretraining_split(cfg, data))
    train, per_batch = plan_corruption(pretrain, parse(cfg.data.corruption))
    eval_train, eval_per_batch = plan_corruption(data.train, parse(cfg.eval_corruption))
    eval_test, _ = plan_corruption(data.test, parse(cfg.eval_corruption))
    mean, std = normalization(cfg, data)
    n_views = method_class(cfg.method).n_views
    crop = {} if cfg.data.crop_min_scale is None else {"crop_scale": (cfg.data.crop_min_scale, 1.0)}
    augment, resize_to = view_augmentation(cfg.data.augmentation, cfg.data.crop_size, cfg.data.input_size, **crop)
    pipeline = Pipeline(per_batch, augment, n_views, mean, std, resize_to)
    return TrialData(
        to_device(train, device),
        pipeline,
        to_device(eval_train, device),
        to_device(eval_test, device),
        eval_per_batch,
        data.num_classes,
        mean,
        std,
    )


def check_input_size(cfg: TrialConfig, image_size: tuple[int, int]) -> None:
    """A ViT's position embedding is built for one image side: refuse inputs of another size
    (``image_size``: what the network sees, ``data.input_size`` where set) now, in one line, rather
    than at the first forward pass."""
    if not is_vit(cfg.model.backbone) or architecture(cfg.model.backbone) not in timm.list_models("vit_*"):
        return  # a ResNet takes any size; an unknown name is refused, listing the valid ones, by build_backbone
    side = vit_input_size(cfg.model.backbone, cfg.model.img_size)
    if image_size == (side, side):
        return
    if cfg.data.input_size is not None:
        raise ValueError(
            f"data.input_size {cfg.data.input_size!r} is invalid for {cfg.model.backbone!r} with model.img_size "
            f"{cfg.model.img_size!r} ({side} px inputs); valid: data.input_size {side}, or model.img_size "
            f"{cfg.data.input_size}"
        )
    raise ValueError(
        f"model.img_size {cfg.model.img_size!r} gives {cfg.model.backbone!r} {side} px inputs, but the images "
        f"are {image_size[0]}x{image_size[1]}; valid: model.img_size {image_size[0]} (square images)"
    )


def build_model(cfg: TrialConfig, num_classes: int, device: torch.device, *, ranks: int = 1) -> Method:
    """Backbone + method head, initialised from the trial's ``init`` seed (global RNG untouched).

    ``ranks`` > 1 (a data-parallel trial): the method's parameters for that many ranks
    (``Method.for_ranks``) and every plain BatchNorm synchronised across them; the initial weights
    are the single process's on every rank."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.system.seed, "init"))
        backbone, dim = build_backbone(
            cfg.model.backbone,
            small_stem=cfg.model.small_stem,
            width=cfg.model.width,
            pretrained=cfg.model.pretrained,
            zero_init_last=cfg.model.zero_init_last,
            stem_padding=cfg.model.stem_padding,
            img_size=cfg.model.img_size,
            patch_size=cfg.model.patch_size,
            pretrained_file=cfg.model.pretrained_file,
        )
        if cfg.model.init_checkpoint:
            load_backbone(backbone, cfg.model.init_checkpoint)
        cls = method_class(cfg.method)
        params = build_params(cfg.method, dict(cfg.method_params))
        method = cls(backbone, dim, num_classes, cls.for_ranks(params, ranks) if ranks > 1 else params)
        if ranks > 1:
            sync_batchnorm(method)
    if not cfg.optim.train_backbone:
        method.backbone.requires_grad_(False)
    method = method.to(device)
    if cfg.system.channels_last:
        method = method.to(memory_format=torch.channels_last)
    method.foreach_ema = cfg.system.foreach_ema
    if cfg.system.compile:
        # On a CPU inductor would run every convolution channels_last (its layout optimisation), past
        # the memory-format guard that chose contiguous and into oneDNN#6035 (trainables.memory_format).
        contiguous_cpu = device.type == "cpu" and not cfg.system.channels_last
        compile_encoders(method, cfg.system.compile_mode, keep_layout=contiguous_cpu)
    return method


COMPILE_BACKEND = "inductor"  # tests swap in "eager"/"aot_eager": inductor's C++ build is minutes on one core


def compile_encoders(method: Method, mode: str = "default", keep_layout: bool = False) -> list[str]:
    """``torch.compile`` every encoder of ``method`` in place; returns their attribute names.

    ``keep_layout``: inductor keeps the tensors' memory format (its ``layout_optimization`` off, for
    these encoders only), so a trial that the memory-format guard keeps contiguous runs contiguous.

    Encoders are the children of the backbone's type (the backbone and MoCo's key, BYOL's target,
    DINO's teacher copies): nearly all of a step's kernels. ``Module.compile`` keeps parameter
    names (no ``_orig_mod.`` prefix), so checkpoints load with or without compile. ``dynamic=False``:
    training batches all have one size (the last partial batch is dropped) and evaluation pads its
    last batch (``trainables.evaluation.protocol``), so each encoder compiles one graph per mode (train, key
    pass without gradients, eval) and never again, on resume or evaluation alike.
    """
    kind = type(method.backbone)
    names = [name for name, child in method.named_children() if type(child) is kind]
    # torch.compile takes a mode or inductor options, not both: the mode's options plus ours.
    how = {"mode": None if mode == "default" else mode}
    if keep_layout and COMPILE_BACKEND == "inductor":
        from torch._inductor import list_mode_options  # imported on use: inductor is a heavy import

        how = {"options": {**list_mode_options(mode), "layout_optimization": False}}
    for name in names:
        getattr(method, name).compile(dynamic=False, backend=COMPILE_BACKEND, **how)
    return names


def load_backbone(backbone: torch.nn.Module, path: str) -> None:
    """Load the backbone weights of one of our checkpoints (``weights_only=True``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("backbone."): v for k, v in state["method"].items() if k.startswith("backbone.")}
    missing, _unexpected = backbone.load_state_dict(weights, strict=False)
    if missing:
        raise ValueError(f"init_checkpoint {path!r} lacks backbone weights {missing[:3]}... for this backbone")


def scaled_lr(cfg: TrialConfig) -> float:
    """The peak learning rate: ``optim.lr`` is given at batch 256 and scales linearly (solo-learn)."""
    return cfg.optim.lr * cfg.optim.batch_size / 256


def build_optim(cfg: TrialConfig, method: Method) -> torch.optim.Optimizer:
    lr = scaled_lr(cfg)
    return build_optimizer(
        method,
        cfg.optim.optimizer,
        lr,
        cfg.optim.weight_decay,
        cfg.optim.momentum,
        cfg.optim.exclude_bias_norm,
        cfg.system.optimizer_impl,
    )


def eval_prepare(td: TrialData, channels_last: bool, crop: int | None = None, size: int | None = None):
    """(B, C, H, W) uint8 (or float in [0, 1]) -> normalised float network input, no augmentation;
    with ``crop``, the centre ``crop`` x ``crop`` of larger images (torchvision's ``CenterCrop``: the
    study's ImageNet evaluation, 224 of 256); with ``size`` (``data.input_size``), then resized to
    (B, C, size, size), bilinear, antialiased only when shrinking (``augment_ops.resize``), per batch."""

    def prepare(images: Tensor) -> Tensor:
        x = to_float(center_crop(images, crop) if crop else images)
        x = normalize(x, td.mean, td.std)
        if size is not None:  # after normalising: the same (resize weights sum to 1); cheaper when upsampling
            x = resize(x, size)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return prepare


def center_crop(images: Tensor, side: int) -> Tensor:
    """``images: (B, C, H, W)`` -> the centre (B, C, min(side, H), min(side, W)), offsets rounded as
    torchvision's ``CenterCrop`` (``int(round((H - side) / 2))``)."""
    h, w = images.shape[-2:]
    top, left = round((h - min(side, h)) / 2), round((w - min(side, w)) / 2)
    return images[..., top : top + min(side, h), left : left + min(side, w)]
