"""The corruption contract, its registry and the spec-string parser.

A corruption is a frozen dataclass whose fields are its parameters in the study's terms
(``grid`` = patches per side, ``gamma``, ``severity``). It is written two ways:

* a spec string compatible with the study's code names: ``glo_8``, ``loc_4``, ``gam_0.2``,
  ``defocusblur_3``; non-default options follow a colon: ``loc_4:patches=independent``;
* a structured dict for configs: ``{"name": "loc", "grid": 4, "patches": "independent"}``.

``str(parse(s)) == s`` for every canonical spec, and ``parse(c.to_dict()) == c``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor


class CorruptionError(ValueError):
    """A corruption spec or parameter is invalid; the message names the value and the choices."""


@dataclasses.dataclass(frozen=True)
class Corruption:
    """Base class: a batched, device-agnostic image corruption.

    Subclasses set ``spec_names`` (spec prefix -> fixed field values, e.g. ``{"glo": {"mode":
    "fixed"}, "randglo": {"mode": "per_image"}}``), ``main_param`` (the field written after the
    underscore, or None), ``family`` (what analysis groups it under: ``global``, ``local``,
    ``gamma``, ...) and implement ``_apply``. Analysis and tracking ask an instance for its
    ``family`` and ``level`` (the main parameter's value) instead of knowing the kinds.
    """

    spec_names: ClassVar[dict[str, dict[str, Any]]] = {}
    main_param: ClassVar[str | None] = None
    family: ClassVar[str] = "other"
    # Spec strings the contract tests run on 32x32 images; every spec name needs one.
    examples: ClassVar[tuple[str, ...]] = ()

    # --- what subclasses implement -------------------------------------------------------
    def _apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def check(self, height: int, width: int) -> None:
        """Raise CorruptionError if this corruption cannot apply to ``height x width`` images."""

    @classmethod
    def identity(cls, height: int, width: int) -> Corruption | None:
        """The setting of this kind that returns images unchanged (None if there is none)."""
        return None

    @property
    def fixed(self) -> bool:
        """True when the output depends only on the input: it can be applied once to a dataset."""
        return True

    # --- shared behaviour ----------------------------------------------------------------
    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Corrupt a batch.

        Args:
            images: (B, C, H, W) uint8 in [0, 255] or floating in [0, 1], on any device.
            generator: source of randomness for non-fixed corruptions (a CPU generator; drawn
                numbers are moved to ``images.device``). Fixed corruptions ignore it.

        Returns:
            (B, C, H, W) tensor of the same dtype and device.
        """
        if images.ndim != 4:
            raise CorruptionError(f"{self}: expected (B, C, H, W) images, got shape {tuple(images.shape)}")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise CorruptionError(f"{self}: dtype {images.dtype} not supported; valid: uint8, float")
        self.check(images.shape[-2], images.shape[-1])
        out = self._apply(images, generator)
        assert out.shape == images.shape and out.dtype == images.dtype, (self, out.shape, out.dtype)
        return out

    @property
    def spec_name(self) -> str:
        """The spec prefix of this instance (``randglo`` for a per-image global shuffle)."""
        for name, fixed_fields in self.spec_names.items():
            if all(getattr(self, k) == v for k, v in fixed_fields.items()):
                return name
        raise AssertionError(f"no spec name matches {self!r}")

    @property
    def level(self) -> float | None:
        """The value of ``main_param`` (the grid of ``glo_4``, the gamma of ``gam_0.5``); None without one."""
        return None if self.main_param is None else float(getattr(self, self.main_param))

    def to_dict(self) -> dict[str, Any]:
        """Structured form: ``{"name": <spec prefix>, <field>: <value>, ...}`` (JSON-able)."""
        return {"name": self.spec_name, **dataclasses.asdict(self)}

    def __str__(self) -> str:
        fixed_fields = self.spec_names[self.spec_name]
        text = self.spec_name
        if self.main_param is not None:
            text += "_" + _format_value(getattr(self, self.main_param))
        options = [
            f"{f.name}={_format_value(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.name != self.main_param and f.name not in fixed_fields and getattr(self, f.name) != f.default
        ]
        return text + (":" + ",".join(options) if options else "")


CORRUPTIONS: dict[str, type[Corruption]] = {}


def register_corruption(cls: type[Corruption]) -> type[Corruption]:
    """Class decorator: register every spec name of ``cls``; raises on a duplicate name."""
    for name in cls.spec_names:
        if name in CORRUPTIONS:
            raise ValueError(f"corruption name {name!r} is already registered by {CORRUPTIONS[name].__name__}")
        CORRUPTIONS[name] = cls
    return cls


def valid_names() -> str:
    """Comma-separated registered spec names, for error messages."""
    return ", ".join(sorted(CORRUPTIONS))


def parse(spec: str | Mapping[str, Any] | Corruption) -> Corruption:
    """Build a corruption from a spec string, a structured dict, or pass one through.

    Raises:
        CorruptionError: unknown name, malformed or out-of-range parameter; the message names
            the bad value and the valid choices.
    """
    if isinstance(spec, Corruption):
        return spec
    if isinstance(spec, Mapping):
        fields = dict(spec)
        name = fields.pop("name", None)
        return _build(str(name), fields, shown=str(dict(spec)))
    if not isinstance(spec, str):
        raise CorruptionError(f"corruption spec must be a string or dict, got {spec!r}")
    head, _, option_text = spec.strip().partition(":")
    name, sep, value = head.partition("_")
    cls = _lookup(name, spec)
    fields: dict[str, Any] = {}
    if cls.main_param is not None:
        if not sep or not value:
            raise CorruptionError(f"corruption {spec!r} needs a parameter: {name}_<{cls.main_param}>")
        fields[cls.main_param] = value
    elif sep:
        raise CorruptionError(f"corruption {spec!r}: {name!r} takes no parameter; write {name!r}")
    for item in filter(None, option_text.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise CorruptionError(f"corruption {spec!r}: option {item!r} is not key=value")
        fields[key.strip()] = val.strip()
    return _build(name, fields, shown=spec)


def _lookup(name: str, shown: str) -> type[Corruption]:
    if name not in CORRUPTIONS:
        raise CorruptionError(f"unknown corruption {shown!r}; valid names: {valid_names()}")
    return CORRUPTIONS[name]


def _build(name: str, fields: dict[str, Any], shown: str) -> Corruption:
    cls = _lookup(name, shown)
    known = {f.name: f for f in dataclasses.fields(cls)}
    fixed_fields = cls.spec_names[name]
    for key, value in fields.items():
        if key not in known:
            raise CorruptionError(
                f"corruption {shown!r}: unknown parameter {key!r}; valid: {', '.join(known) or 'none'}"
            )
        if key in fixed_fields and _coerce(known[key], value, shown) != fixed_fields[key]:
            raise CorruptionError(f"corruption {shown!r}: {key}={value!r} contradicts {name!r}")
    kwargs = {k: _coerce(known[k], v, shown) for k, v in fields.items()}
    kwargs.update(fixed_fields)
    return cls(**kwargs)


def _coerce(field: dataclasses.Field, value: Any, shown: str) -> Any:
    """Convert a spec-string value to the field's declared type (int, float or str)."""
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        raise CorruptionError(
            f"corruption {shown!r}: {field.name} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}; "
            f"valid: {field.name} = {'1, 2, 3, ...' if kind == 'int' else 'a decimal number such as 0.2'}"
        ) from None
    return str(value)


def _format_value(value: Any) -> str:
    """Shortest round-tripping text: 2 not 2.0 for integral floats, repr otherwise."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_choice(kind: str, field: str, value: Any, choices: tuple) -> None:
    """Raise CorruptionError unless ``value`` is one of ``choices`` (``kind`` names the corruption)."""
    if value not in choices:
        raise CorruptionError(f"{kind}: {field} {value!r} is invalid; valid: {', '.join(map(str, choices))}")
