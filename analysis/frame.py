"""The tidy trial table every analysis reads: column names, arms, corruption families, budgets.

A *trial frame* has one row per finished trial. The only required columns are ``method``,
``corruption`` (or ``data.corruption``), ``seed`` (or ``system.seed``) and metric columns;
``analysis.collect`` adds the whole flat config (``data.*``, ``model.*``, ``optim.*``, ...).
Everything here is a pure function of DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from corruptions import parse
from trainables.metrics import CLASSWISE_UNIFORMITY

UNTRAINED = "untrained"  # arm of trials with optim.epochs == 0 from no pretrained network (the backbone at init)
CLEAN = "ori"
FAMILIES = ("global", "local", "gamma")  # the study's families: claims and correlations are per family

# Methods by what supervises them (docs/study.md §2.1); unknown methods count as contrastive/SSL.
SUPERVISED = "supervised"
LABEL_METHODS = frozenset({"supervised", "supcon"})
LABELS_PER_CLASS = "data.labels_per_class"  # set: the arm is "<method>@<n>" (an accuracy-matched arm)
# Config that must agree between a trained trial and its untrained reference (epoch 0 / the floor):
# what builds and evaluates the network, not what trains it (method, optim.*, augmentation, and
# data.labels_per_class: the kNN bank and the probe use the whole training split either way).
FLOOR_KEYS = ("corruption", "seed", "data.dataset", "data.image_size", "data.train_per_class", "data.test_per_class")
FLOOR_PREFIXES = ("model.", "eval.")
# Speed levers (issue 24): how fast a trial ran, not what it computed beyond rounding.
SPEED_KEYS = frozenset(
    {
        "system.compile_mode",
        "system.cuda_graph",
        "system.optimizer_impl",
        "system.foreach_ema",
        "system.finite_check_every",
        "eval.batch_size",
        "eval.on_device",
        # How the images are read: decoded once, or streamed from the files (the same bytes on the
        # CPU; GPU-decoded JPEGs differ by rounding, trainables.data.stream).
        "data.streaming",
        "data.stream_workers",
    }
)
# Flat config keys that do not define a budget (where the data lives, or what was corrupted).
NOT_BUDGET = frozenset(
    {
        "data.corruption",
        "data.eval_corruption",
        "data.cache_dir",
        "data.data_dir",
        "data.memory_budget_gb",
        "system.seed",
        "system.device",
        "system.compile",
        "system.channels_last",
        "system.checkpoint_every",
        *SPEED_KEYS,
    }
)
# Keys added after trials were recorded, with the value every trial ran with before: a trial that
# lacks the column matches one that records this value.
MISSING_MEANS = {"eval.bank_dtype": "fp32"}
BUDGET_PREFIXES = ("data.", "model.", "optim.", "eval.", "system.", "method.")


class AnalysisError(ValueError):
    """A bad analysis input; the message is one line naming the value and the valid ones."""


def annotate(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``corruption``/``seed`` aliases, ``arm`` (method or ``untrained``) and ``family``.

    Args:
        df: a trial frame (see module docstring).

    Returns:
        A copy with ``arm``: the method, ``<method>@<n>`` where ``data.labels_per_class`` is a
        number n, or ``untrained`` where ``optim.epochs == 0`` from no pretrained network (``given_network``);
        ``family``, ``kind`` (spec prefix) and ``level`` (main parameter, NaN without one), as the
        corruption declares them (``clean``, ``global``, ``local``, ``gamma``, ``common``, or a
        registered corruption's own family); ``n_test`` (see ``n_test``).
    """
    out = df.copy()
    if "corruption" not in out and "data.corruption" in out:
        out["corruption"] = out["data.corruption"]
    if "seed" not in out and "system.seed" in out:
        out["seed"] = out["system.seed"]
    epochs = out["optim.epochs"] if "optim.epochs" in out else pd.Series(np.nan, index=out.index)
    given = downstream_rows(out)
    labels = out[LABELS_PER_CLASS] if LABELS_PER_CLASS in out else pd.Series(None, index=out.index)
    out["arm"] = [arm_of(m, e, None, n, g) for m, e, g, n in zip(out["method"], epochs, given, labels, strict=True)]
    described = [describe(c) for c in out["corruption"]]
    out["kind"] = [d[0] for d in described]
    out["family"] = [d[1] for d in described]
    out["level"] = [d[2] for d in described]
    out["n_test"] = n_test(out)
    return out


def given_network(init_checkpoint=None, pretrained=None) -> bool:
    """Whether a trial starts from a pretrained network (a downstream trial): one of our checkpoints
    (``model.init_checkpoint``) or timm's weights (``model.pretrained``; true, or "True" as MLflow
    records it)."""
    return (isinstance(init_checkpoint, str) and bool(init_checkpoint)) or str(pretrained).lower() == "true"


def downstream_rows(df: pd.DataFrame) -> pd.Series:
    """(N,) bool: which trials of a frame start from a pretrained network (``given_network``)."""
    init = df["model.init_checkpoint"] if "model.init_checkpoint" in df else pd.Series(None, index=df.index)
    timm = df["model.pretrained"] if "model.pretrained" in df else pd.Series(None, index=df.index)
    return pd.Series([given_network(i, p) for i, p in zip(init, timm, strict=True)], index=df.index, dtype=bool)


def arm_of(method: str, epochs, init_checkpoint=None, labels_per_class=None, pretrained=None) -> str:
    """The arm of one trial: ``untrained`` for 0 epochs from init, else its method, suffixed
    ``@<n>`` when it learned from only n labelled images per class (``data.labels_per_class``).

    A 0-epoch trial that starts from a pretrained network (``given_network``) is a downstream probe
    of it, so it keeps its method. ``supervised@100`` is the accuracy-matched
    supervised arm (issue 22): its own row in every table, a label-using arm, never contrastive.
    """
    if epochs == 0 and not given_network(init_checkpoint, pretrained):
        return UNTRAINED
    n = _count(labels_per_class)
    return method if n is None else f"{method}@{n}"


def config_arm(flat: Mapping[str, Any]) -> str:
    """The arm of a flat trial config (``arm_of``), as the tables name it."""
    return arm_of(
        flat.get("method", "trial"),
        flat.get("optim.epochs"),
        flat.get("model.init_checkpoint"),
        flat.get("data.labels_per_class"),
        flat.get("model.pretrained"),
    )


def _count(value) -> int | None:
    """An integer label count, or None for None/NaN/"" (a column of ints and None reads as floats)."""
    if isinstance(value, str):
        return int(value) if value.strip().isdigit() else None
    return None if value is None or pd.isna(value) else int(value)


def base_method(arm: str) -> str:
    """The method of an arm: ``supervised@100`` -> ``supervised``."""
    return arm.partition("@")[0]


def is_label_arm(arm: str) -> bool:
    """Whether the arm's method learns from labels (supervised, supcon and their ``@n`` arms)."""
    return base_method(arm) in LABEL_METHODS


def labels_of(arm: str) -> int | None:
    """n of a ``<method>@<n>`` arm, None for an arm with every label."""
    _, at, n = arm.partition("@")
    return int(n) if at else None


def describe(spec: str) -> tuple[str, str, float]:
    """``(kind, family, level)`` of a corruption spec as the corruption declares them:
    ``glo_4`` -> ``("glo", "global", 4.0)``; the level is NaN for a kind without a main parameter."""
    corruption = parse(spec)
    level = corruption.level
    return corruption.spec_name, corruption.family, math.nan if level is None else level


def in_family(df: pd.DataFrame, family: str) -> pd.Series:
    """Rows belonging to a corruption family, its identity (``ori``) included.

    ``ori`` is every family's identity setting (glo_1 = loc_<side> = gam_1), so it is the
    first point of each family's curve. A global shuffle with one patch per pixel is the same
    full permutation as loc_1 (docs/study.md §1.1), so it counts in both families; the image
    side comes from ``data.image_size`` or a recorded ``image_size`` metric when present.
    """
    if family == "all":
        return pd.Series(True, index=df.index)
    member = (df["family"] == family) | (df["family"] == "clean")
    side = image_side(df)
    if family in ("global", "local") and side is not None:
        other = "glo" if family == "local" else "loc"
        full = side if other == "glo" else 1
        member |= (df["kind"] == other) & (df["level"] == full)
    return member


def family_levels(df: pd.DataFrame, family: str) -> list[str]:
    """The corrupted settings of one family present in an annotated frame (``ori`` not included)."""
    return sorted(set(df.loc[df["family"] == family, "corruption"]))


def image_side(df: pd.DataFrame) -> float | None:
    """The trials' image side in pixels (``image_size`` metric or ``data.image_size``), if recorded."""
    for column in ("image_size", "data.image_size"):
        if column in df and df[column].notna().any():
            return float(df[column].dropna().iloc[0])
    return None


def budget_keys(df: pd.DataFrame) -> list[str]:
    """Config columns that must agree for two trials to be compared (method, dataset, budget).

    Everything in the flat config except the corruption, the seed and where things live.
    Frames without config columns (e.g. a sweep's in-memory summary) match on method alone.
    """
    keys = [c for c in df.columns if c.startswith(BUDGET_PREFIXES) and c not in NOT_BUDGET]
    return ["method", *sorted(keys)]


def n_test(df: pd.DataFrame) -> pd.Series:
    """Evaluated test images per trial: a recorded ``n_test``, else test_per_class x classes.

    The class count is the length of ``classwise_uniformity``. NaN where neither is known.
    """
    recorded = df["n_test"] if "n_test" in df else pd.Series(np.nan, index=df.index)
    per_class = df["data.test_per_class"] if "data.test_per_class" in df else pd.Series(np.nan, index=df.index)
    if CLASSWISE_UNIFORMITY in df:
        classes = df[CLASSWISE_UNIFORMITY].map(lambda v: len(v) if isinstance(v, (list, tuple)) else np.nan)
    else:
        classes = pd.Series(np.nan, index=df.index)
    return recorded.astype(float).fillna(per_class.astype(float) * classes.astype(float))


def arm_order(arms) -> list[str]:
    """Table row order: supervised (then its ``@n`` arms by n), other label-using methods, the
    rest, ``untrained`` last."""

    def key(arm: str):
        base, n = base_method(arm), labels_of(arm)
        return (arm == UNTRAINED, base != SUPERVISED, not is_label_arm(arm), base, n is not None, n or 0)

    return sorted(set(arms), key=key)


def trained_arms(df: pd.DataFrame) -> list[str]:
    """Arms other than the untrained reference, in ``arm_order``."""
    return [a for a in arm_order(df["arm"]) if a != UNTRAINED]


def contrastive_arms(df: pd.DataFrame) -> list[str]:
    """Trained arms that learn without labels (everything but supervised, supcon and their ``@n`` arms)."""
    return [a for a in trained_arms(df) if not is_label_arm(a)]


def matched_arms(df: pd.DataFrame) -> list[str]:
    """Label-using arms trained on ``n`` labels per class (``supervised@100``, ...), in ``arm_order``."""
    return [a for a in trained_arms(df) if is_label_arm(a) and labels_of(a) is not None]


# When a trial evaluates, not how: its final evaluation of a network is the same whatever these are
# (the accuracy-matched arm evaluates every 312 epochs, its untrained reference every 6).
EVAL_SCHEDULE_KEYS = frozenset({"eval.eval_every", "eval.knn_at_init"})


def floor_keys(df: pd.DataFrame) -> list[str]:
    """Columns on which a trained trial matches its untrained reference (``FLOOR_KEYS``, model.*, eval.*,
    but not the speed levers or the evaluation schedule)."""
    return [k for k in FLOOR_KEYS if k in df] + sorted(
        c for c in df if c.startswith(FLOOR_PREFIXES) and c not in SPEED_KEYS and c not in EVAL_SCHEDULE_KEYS
    )


def match_key(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """One string per row from ``keys`` (config values may be lists); None and NaN read the same."""
    if not keys or df.empty:
        return pd.Series("", index=df.index, dtype=object)
    cols = {
        k: df[k].map(lambda v, k=k: MISSING_MEANS[k] if _missing(v) else v) if k in MISSING_MEANS else df[k]
        for k in keys
    }
    return pd.DataFrame(cols).map(lambda v: "None" if _missing(v) else repr(v)).agg("|".join, axis=1)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def constant_config(df: pd.DataFrame) -> dict[str, object]:
    """Config keys with a single value across the frame (the sweep's shared settings)."""
    out = {}
    for column in sorted(c for c in df.columns if c.startswith(BUDGET_PREFIXES) or c == "method"):
        values = df[column].map(repr).unique()
        if len(values) == 1:
            out[column] = df[column].iloc[0]
    return out
