"""Trial configuration: one frozen dataclass per concern, defaults declared only here.

Ray and MLflow see the flat, JSON-able form: ``{"method": "moco_v2", "data.dataset": "digits",
"optim.lr": 0.3, "method.temperature": 0.2, ...}``. ``from_flat`` rejects unknown keys listing
the known ones and converts every value to its field's annotated type (``coerce``: ``"5e-4"``, as
YAML 1.1 reads it, becomes 0.0005) or refuses it in one line naming key, value and type. Fields
left ``None`` take the method's defaults (``Method.defaults``) when the config is resolved, so the
recorded flat config always holds the values that actually ran.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import re
import types
import typing
from typing import Any

import yaml

from corruptions import parse as parse_corruption


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # registered name or imagefolder:<path>
    data_dir: str | None = None  # torchvision download/lookup folder
    cache_dir: str | None = None  # decoded-array cache (default ~/.cache/spatial-bias-lab)
    image_size: int | None = None  # square side; None = the dataset's own
    train_per_class: int | None = None  # subset: first n training images of every class
    test_per_class: int | None = None
    # label budget: a method trained with labels sees only the first n training images of every
    # class; the whole training split still serves the kNN bank and the probe (accuracy-matched arms)
    labels_per_class: int | None = None
    memory_budget_gb: float = 8.0  # larger splits stream from a memory map; see streaming
    # auto: an image folder whose decoded splits exceed memory_budget_gb streams its files instead of
    # being decoded once; true: always (image folders only); false: never (decode once, memory-map)
    streaming: bool | str = "auto"
    stream_workers: int | None = None  # processes decoding a streamed split; None: the cores, at most 8
    corruption: str = "ori"  # pretraining corruption spec
    eval_corruption: str | None = None  # None: the pretraining corruption (the study's setting)
    augmentation: str | None = None  # None: the method's recipe
    crop_min_scale: float | None = None  # None: the recipe's (0.08 for SSL); larger = milder crops
    crop_size: int | None = None  # training views' side; None: the stored image's (study ImageNet: 224 of 256)
    eval_crop_size: int | None = None  # evaluation: centre crop of this side; None: the whole image
    # the network's input side: training views and evaluation crops are resized (bilinear) to it after
    # the corruption and the crop, per batch (downstream: 32 px CIFAR -> 224); None: no resize
    input_size: int | None = None
    # per-channel mean/std the views are normalised with: dataset (the training split's own), imagenet
    # (the study's ImageNet scripts'), pretrained (what model.backbone's timm weights expect)
    normalization: str = "dataset"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"  # any timm ResNet or ViT (vit_tiny_patch16_224, vit_small_patch16_224, ...)
    small_stem: bool = True  # ResNets: 3x3 stride-1 stem, no max-pool (32-96 px images); ViTs: must be false
    stem_padding: int = 1  # the small stem's padding; the study's (solo-learn's) is 2: 34x34 maps from 32 px
    width: float = 1.0  # multiplier on stage widths; 0.25 = quarter width
    pretrained: bool = False  # timm weights (needs them cached or a network)
    # timm weights from this local file instead (a state dict of the architecture, e.g. saved from
    # timm.create_model(name, pretrained=True) where a network was): needs model.pretrained true
    pretrained_file: str | None = None
    zero_init_last: bool = (
        True  # timm's zero-init of each block's last BN; false = torchvision's init (the study's presets)
    )
    init_checkpoint: str | None = None  # start from one of our checkpoints (downstream setting)
    img_size: int | None = None  # ViTs: input side in px (None: the model's, 224); must match the data's
    patch_size: int | None = None  # ViTs: patch side in px (None: the model's, e.g. 16); 4 for 32 px images


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    optimizer: str | None = None  # sgd | lars; None: the method's
    lr: float | None = None  # at batch 256; scaled by batch_size / 256 (solo-learn)
    weight_decay: float | None = None
    exclude_bias_norm: bool | None = None  # no weight decay (nor LARS scaling) on biases and norms; None: the method's
    momentum: float = 0.9
    batch_size: int = 256
    epochs: int = 10
    # NOTE: solo-learn warms up 10 of 200 epochs; a fraction keeps that ratio for short runs.
    warmup_fraction: float = 0.05
    train_backbone: bool = True  # False: frozen backbone (downstream probing)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    eval_every: int = 1  # epochs between kNN/uniformity evaluations (0: only at the end)
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_distance: str = "cosine"  # cosine | euclidean
    probe: bool = True  # linear probe + ECE at the end
    bank_size: int | None = None  # cap on training features in per-epoch kNN (None: all)
    knn_at_init: bool = False  # also evaluate the untrained network: knn_acc_init, knn_gain = knn_acc - it
    batch_size: int = 512  # images per feature-extraction batch (larger pays on a GPU)
    on_device: bool = False  # per-epoch metrics (kNN, geometry) on the training device, not the CPU
    bank_dtype: str = "fp32"  # fp32 | bf16: kNN bank and queries (bf16 halves a GPU's matmul and memory)
    # Fine-tuning (trainables.evaluation.finetune): a copy of the trained backbone + a new linear head,
    # all trained on the evaluation-corrupted training split, scored on the test split (finetune_acc).
    finetune: bool = False
    finetune_epochs: int = 10
    finetune_optimizer: str = "sgd"  # sgd | lars | adamw
    finetune_lr: float = 0.05  # at batch 256, scaled by finetune_batch_size / 256 as optim.lr is
    finetune_weight_decay: float = 5e-4
    finetune_batch_size: int = 256
    finetune_augmentation: str = "pad_crop"  # any registered augmentation; pad_crop = pad-4 crop + flip


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast where the device has native bf16, else fp32) | bf16 | fp32
    channels_last: bool = True  # on CPU only where the memory-format canary passes (trainables.memory_format)
    compile: bool = False  # torch.compile every encoder (dynamic=False, once per trial; trainables.build)
    compile_mode: str = (
        "default"  # torch.compile mode: default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    )
    cuda_graph: bool = False  # the whole training step as one CUDA graph (trainables.step); ignored without CUDA
    optimizer_impl: str = "auto"  # auto (torch's pick; LARS per parameter) | loop | foreach | fused (SGD only)
    foreach_ema: bool = False  # momentum encoders updated by one torch._foreach_lerp_ (rounding differs by ~1 ulp)
    finite_check_every: int = 1  # steps between non-finite-loss checks; each check waits for the device
    checkpoint_every: int = 1  # epochs between checkpoints handed to the caller


OPTIM_DEFAULTS = {"exclude_bias_norm": False}  # for methods whose ``defaults`` do not say
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "eval": EvalConfig, "system": SystemConfig}
CHOICES = {
    "data.normalization": ("dataset", "imagenet", "pretrained"),
    "optim.optimizer": ("sgd", "lars", "adamw"),
    "eval.finetune_optimizer": ("sgd", "lars", "adamw"),
    "eval.knn_distance": ("cosine", "euclidean"),
    "system.precision": ("auto", "bf16", "fp32"),
    "system.compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "system.optimizer_impl": ("auto", "loop", "foreach", "fused"),
    "eval.bank_dtype": ("fp32", "bf16"),
}


# Lower bounds checked by ``validate``: key -> (bound, inclusive). None (a method default) always passes.
MINIMUMS = {
    "data.image_size": (1, True),
    "data.crop_size": (1, True),
    "data.eval_crop_size": (1, True),
    "data.input_size": (1, True),
    "data.train_per_class": (1, True),
    "data.test_per_class": (1, True),
    "data.memory_budget_gb": (0, False),
    "data.stream_workers": (0, True),
    "model.width": (0, False),
    "optim.lr": (0, False),
    "optim.weight_decay": (0, True),
    "optim.batch_size": (1, True),
    "optim.epochs": (0, True),  # 0: the untrained reference
    "optim.warmup_fraction": (0, True),
    "eval.eval_every": (0, True),
    "eval.knn_k": (1, True),
    "eval.bank_size": (1, True),
    "system.seed": (0, True),
    "system.checkpoint_every": (1, True),
    "eval.batch_size": (1, True),
    "system.finite_check_every": (1, True),
    "model.img_size": (1, True),
    "model.patch_size": (1, True),
    "eval.finetune_epochs": (1, True),
    "eval.finetune_lr": (0, False),
    "eval.finetune_weight_decay": (0, True),
    "eval.finetune_batch_size": (1, True),
}

# YAML 1.1 (PyYAML) reads 5e-4, 1e6 and +1 as strings: they are numbers here.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INVALID = object()
EXPECTED = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _to_int(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _INVALID
    if isinstance(value, numbers.Integral):
        return int(value)
    return int(value) if math.isfinite(value) and float(value).is_integer() else _INVALID  # 2.0 yes, 1.5 no


def _to_float(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return _INVALID
    return float(value)


_CONVERT = {
    int: _to_int,
    float: _to_float,
    bool: lambda v: bool(v) if isinstance(v, bool) or type(v).__name__ == "bool_" else _INVALID,  # numpy's too
    str: lambda v: v if isinstance(v, str) else os.fspath(v) if isinstance(v, os.PathLike) else _INVALID,
}


def coerce(key: str, value: Any, kind: Any) -> Any:
    """``value`` converted to the field annotation ``kind`` (int, float, bool, str, optionally ``| None``).

    Numbers written as strings are read (``"5e-4"`` -> 0.0005), an int field takes whole floats
    (``2.0``) but never ``1.5`` or a bool, a float field any finite number, a bool field only true or
    false, and None passes only where the annotation allows it. Other annotations pass unchanged.

    Raises:
        ValueError: one line naming the key, the value and the expected type, e.g.
            ``optim.lr 'abc' is invalid; valid: a number or null``.
    """
    optional, base = False, kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, base = len(others) < len(typing.get_args(kind)), others[0] if len(others) == 1 else None
    if value is None and optional:
        return None
    if base not in _CONVERT:
        return value
    converted = _CONVERT[base](value)
    if converted is _INVALID:
        raise ValueError(f"{key} {value!r} is invalid; valid: {EXPECTED[base]}{' or null' if optional else ''}")
    return converted


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field annotations (this module's postponed ones included)."""
    return typing.get_type_hints(cls)


def coerce_fields(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``values`` (field name -> value) of dataclass ``cls`` coerced to its annotations; errors name
    ``<prefix><field>``. Unknown names pass unchanged (``from_flat`` reports those)."""
    kinds = field_types(cls)
    return {k: coerce(prefix + k, v, kinds[k]) if k in kinds else v for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. ``method_params`` holds overrides of the method's Params."""

    method: str = "moco_v2"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    system: SystemConfig = SystemConfig()
    method_params: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> Any:
        """The method's Params dataclass with the overrides applied."""
        from trainables.methods import build_params

        return build_params(self.method, dict(self.method_params))

    @property
    def eval_corruption(self) -> str:
        return self.data.eval_corruption or self.data.corruption

    def resolved(self) -> TrialConfig:
        """Fill ``None`` optimizer/augmentation fields from the method's defaults and validate."""
        from trainables.methods import method_class

        defaults = method_class(self.method).defaults
        optim = dataclasses.replace(
            self.optim,
            **{
                k: defaults.get(k, OPTIM_DEFAULTS.get(k))
                for k in ("optimizer", "lr", "weight_decay", "exclude_bias_norm")
                if getattr(self.optim, k) is None
            },
        )
        data = (
            self.data
            if self.data.augmentation
            else dataclasses.replace(self.data, augmentation=defaults["augmentation"])
        )
        cfg = dataclasses.replace(self, optim=optim, data=data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the bad value and the valid choices."""
        _ = self.params  # unknown method or method parameter
        parse_corruption(self.data.corruption)
        parse_corruption(self.eval_corruption)
        from trainables.data.datasets import streaming_mode

        streaming_mode(self.data.streaming)
        flat = self.to_flat()
        for key, choices in CHOICES.items():
            if flat[key] is not None and flat[key] not in choices:
                raise ValueError(f"{key} {flat[key]!r} is invalid; valid: {', '.join(choices)}")
        for key, (bound, inclusive) in MINIMUMS.items():
            value = flat[key]
            if value is not None and (value < bound if inclusive else value <= bound):
                kind = "an integer" if isinstance(value, int) else "a number"
                raise ValueError(f"{key} {value!r} is invalid; valid: {kind} {'>=' if inclusive else '>'} {bound}")
        if flat["optim.optimizer"] == "lars" and flat["system.optimizer_impl"] == "fused":
            raise ValueError(
                "system.optimizer_impl 'fused' is invalid with optim.optimizer lars; valid: auto, loop, foreach"
            )
        if self.eval.finetune:
            from trainables.data.augment import AUGMENTATIONS

            if self.eval.finetune_augmentation not in AUGMENTATIONS:
                raise ValueError(
                    f"eval.finetune_augmentation {self.eval.finetune_augmentation!r} is invalid; "
                    f"valid: {', '.join(sorted(AUGMENTATIONS))}"
                )
        if self.model.pretrained_file is not None and not self.model.pretrained:
            raise ValueError(
                f"model.pretrained_file {self.model.pretrained_file!r} is set but model.pretrained is false; "
                "valid: model.pretrained true with it, or model.pretrained_file null"
            )
        if self.data.labels_per_class is not None:
            from trainables.methods import method_class

            if not method_class(self.method).uses_labels:
                raise ValueError(
                    f"data.labels_per_class {self.data.labels_per_class!r} is invalid for method {self.method!r}, "
                    "which trains without labels; valid: null, or a method trained with labels (supervised, supcon)"
                )
            if self.data.labels_per_class < 1:
                raise ValueError(
                    f"data.labels_per_class {self.data.labels_per_class!r} is invalid; valid: null or an integer >= 1"
                )
        if self.data.crop_min_scale is not None and self.data.augmentation:
            from trainables.data.augment import AUGMENTATIONS, recipe_options

            cropped = sorted(k for k, r in AUGMENTATIONS.items() if "crop_scale" in recipe_options(r))
            if self.data.augmentation in AUGMENTATIONS and self.data.augmentation not in cropped:
                raise ValueError(
                    f"data.crop_min_scale {self.data.crop_min_scale!r} needs random-resized crops, which "
                    f"augmentation {self.data.augmentation!r} has not; valid augmentations: {', '.join(cropped)}"
                )
            if not 0 < self.data.crop_min_scale <= 1:
                raise ValueError(f"data.crop_min_scale {self.data.crop_min_scale!r} is invalid; valid: 0 < value <= 1")

    def to_flat(self) -> dict[str, Any]:
        """JSON-able flat dict: ``method``, ``<section>.<field>`` and ``method.<param>``."""
        flat: dict[str, Any] = {"method": self.method}
        for section in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[f"{section}.{key}"] = value
        for key, value in dataclasses.asdict(self.params).items():
            flat[f"method.{key}"] = value
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        """Inverse of ``to_flat``; any subset of keys. Unknown keys raise listing the known ones."""
        from trainables.methods import method_class

        method = coerce("method", flat.get("method", cls.method), str)
        known_params = [f.name for f in dataclasses.fields(method_class(method).Params)]
        known = ["method"] + [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
        known += [f"method.{p}" for p in known_params]
        unknown = sorted(map(str, set(flat) - set(known)))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        sections = {
            s: c(**coerce_fields(c, {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(s + ".")}, s + "."))
            for s, c in SECTIONS.items()
        }
        params = coerce_fields(
            method_class(method).Params,
            {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("method.")},
            "method.",
        )
        params = tuple(sorted(params.items()))
        return cls(method=method, method_params=params, **sections)

    def replace(self, overrides: dict[str, Any]) -> TrialConfig:
        """A copy with flat-key overrides, e.g. ``cfg.replace({"optim.epochs": 2})``."""
        flat = {k: v for k, v in self.to_flat().items() if not k.startswith("method.")}
        if overrides.get("method", self.method) == self.method:  # keep our explicit params
            flat.update({f"method.{k}": v for k, v in self.method_params})
        return TrialConfig.from_flat({**flat, **overrides})


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (numbers, booleans, null, strings)."""
    key, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"--set {text!r} is not key=value (e.g. optim.lr=0.1)")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise ValueError(
            f"--set {text!r}: the value is malformed YAML; valid: a number, true/false, null or a string"
        ) from None
