"""A finished trial's network and data, rebuilt for inspection (Grad-CAM, t-SNE).

The model is rebuilt from the trial's flat config with ``trainables.build.build_model`` (so an
epochs-0 trial is exactly the backbone at initialisation) and, for trained trials, loaded from
the checkpoint path ``analysis.collect`` found (``torch.save`` dict, key ``"method"``).
Everything runs in float32 on the CPU unless another device is asked for.
"""

from __future__ import annotations

import dataclasses
import functools

import pandas as pd
import torch
from torch import Tensor

from analysis.collect import RECORDED_CONFIG
from analysis.frame import UNTRAINED, AnalysisError, annotate, arm_order
from corruptions import parse
from trainables.build import build_model, first_per_class, load_data, normalization
from trainables.config import TrialConfig
from trainables.data.augment import normalize, to_float
from trainables.data.datasets import ImageDataset, Split
from trainables.methods import Method


@dataclasses.dataclass
class LoadedTrial:
    """A trial's config, its network (eval mode) and its (subset) dataset."""

    row: pd.Series
    cfg: TrialConfig
    method: Method
    data: ImageDataset
    device: torch.device

    @functools.cached_property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The per-channel (mean, std) the trial normalised its inputs with (computed once)."""
        return normalization(self.cfg, self.data)

    def inputs(self, images: Tensor, corruption: str) -> Tensor:
        """(B, C, H, W) uint8 -> corrupted, normalised float32 network input on the device."""
        corrupted = parse(corruption)(images, torch.Generator().manual_seed(0))
        return normalize(to_float(corrupted), *self.stats).to(self.device)

    @torch.no_grad()
    def features(
        self, split: Split, corruption: str, per_class: int | None = None, batch_size: int = 256
    ) -> tuple[Tensor, Tensor]:
        """Backbone features (N, D) float32 and labels (N,) of a split under a corruption.

        Args:
            split: e.g. ``self.data.test``.
            corruption: spec applied to every image (the study's fixed permutations).
            per_class: keep the first n images of every class (None: all).
        """
        index = first_per_class(split.labels, per_class)
        feats = [
            self.method.embed(self.inputs(split.images[i], corruption)).float().cpu() for i in index.split(batch_size)
        ]
        return torch.cat(feats), split.labels[index]


def trial_config(row: pd.Series, device: str = "cpu") -> TrialConfig:
    """A frame row's trial -> TrialConfig, from the flat config the sweep recorded (the row's
    ``recorded_config``: MLflow params or the Tune config), run on ``device`` in fp32.

    Frames built without it (by hand) fall back to the row's config columns, where a column holding
    ints and NaNs (a param other methods lack) is float in pandas: values are turned back into ints
    where the config's default is an int, and other methods' params are dropped.
    """
    defaults = TrialConfig(method=row["method"]).to_flat()
    recorded = row.get(RECORDED_CONFIG)
    if isinstance(recorded, dict):
        flat = {k: v for k, v in recorded.items() if k in defaults}
    else:
        flat = {k: _restore(v, defaults[k]) for k, v in row.items() if k in defaults}
    flat.update(
        {"system.device": device, "system.compile": False, "system.channels_last": False, "system.precision": "fp32"}
    )
    return TrialConfig.from_flat(flat).resolved()


def _restore(value, default):
    if not isinstance(value, (list, tuple, dict)) and pd.isna(value):
        return None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_trial(row: pd.Series, device: str = "cpu") -> LoadedTrial:
    """Rebuild a trial's network (from its checkpoint if trained) and load its data."""
    cfg = trial_config(row, device)
    data = load_data(cfg.data)
    method = build_model(cfg, data.num_classes, torch.device(device))
    epochs = int(row.get("optim.epochs", 1))
    checkpoint = row.get("checkpoint")
    if isinstance(checkpoint, str):
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        method.load_state_dict(state["method"])
    elif epochs > 0:
        raise AnalysisError(
            f"trial {row.get('trial_id')!r} ({row['method']}, {row['data.corruption']}) has no "
            "checkpoint under the Tune storage; pass --storage-path where the sweep ran"
        )
    return LoadedTrial(row, cfg, method.eval(), data, torch.device(device))


def select_trials(
    df: pd.DataFrame,
    method: str | None = None,
    corruption: str | None = None,
    seed: int | None = None,
    trial: str | None = None,
) -> pd.DataFrame:
    """Rows of an (annotated) frame matching the filters; ``method`` may be ``untrained``.

    ``trial`` matches ``run_id`` or ``trial_id``. Raises AnalysisError naming the valid values
    when nothing matches.
    """
    df = annotate(df)
    mask = pd.Series(True, index=df.index)
    if trial is not None:
        mask &= (df.get("run_id") == trial) | (df.get("trial_id") == trial)
    for column, value in (("arm", method), ("corruption", corruption), ("seed", seed)):
        if value is not None:
            if value not in set(df[column]):
                raise AnalysisError(
                    f"no trial with {column} {value!r}; valid: {', '.join(map(str, sorted(set(df[column]), key=str)))}"
                )
            mask &= df[column] == value
    if not mask.any():
        raise AnalysisError(f"no trial matches method={method}, corruption={corruption}, seed={seed}, trial={trial}")
    found = df[mask]
    order = {a: i for i, a in enumerate(arm_order(found["arm"]))}
    return found.assign(_o=found["arm"].map(order)).sort_values(["_o", "seed"]).drop(columns="_o")


PAPER_LEVELS = ("glo_4", "loc_8", "gam_0.2")  # the study's "mild" settings (docs/study.md §1.3)


def showcase(df: pd.DataFrame, families: bool = True) -> pd.DataFrame:
    """A few trials worth looking at, lowest seed: per trained method its ``ori`` trial and one
    corruption per family (the study's mild level if present, else the first); the untrained
    reference on ``ori`` last."""
    df = annotate(df)
    df = df[df["seed"] == df["seed"].min()]
    picks = []
    for arm in arm_order(df["arm"]):
        mine = df[df["arm"] == arm]
        picks += list(mine.index[mine["corruption"] == "ori"][:1])
        if arm == UNTRAINED or not families:
            continue
        for _, family in mine[mine["family"].isin(("global", "local", "gamma"))].groupby("family"):
            preferred = family[family["corruption"].isin(PAPER_LEVELS)]
            picks.append((preferred if len(preferred) else family.sort_values("level")).index[0])
    return df.loc[picks]
