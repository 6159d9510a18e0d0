"""Corruptions describe themselves: a corruption registered here (the one docs/extending.md shows)
gets its family, level and tags in the MLflow run and the drop table with no edit outside its class."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from analysis.drops import drop_table
from analysis.frame import annotate
from corruptions import CORRUPTIONS, parse
from corruptions.base import Corruption, register_corruption


@pytest.fixture
def invert():
    @register_corruption
    @dataclasses.dataclass(frozen=True)
    class Invert(Corruption):
        """``inv_<p>``: invert a fraction p of the intensity range (p=0: identity)."""

        p: float
        spec_names = {"inv": {}}
        main_param = "p"
        family = "intensity"
        examples = ("inv_0.5",)

        @classmethod
        def identity(cls, height, width):
            return cls(p=0.0)

        def _apply(self, images, generator):
            top = 255 if images.dtype == torch.uint8 else 1.0
            return torch.where(images >= top * (1 - self.p), top - images, images)

    yield Invert
    del CORRUPTIONS["inv"]


@pytest.mark.parametrize(
    ("spec", "family", "level"),
    [
        ("ori", "clean", None),
        ("glo_4", "global", 4.0),
        ("randloc_8", "local", 8.0),
        ("gam_0.5", "gamma", 0.5),
        ("jpeg_3", "common", 3.0),
    ],
)
def test_builtin_corruptions__declare_family_and_level(spec, family, level):
    corruption = parse(spec)
    assert (corruption.family, corruption.level) == (family, level)


def test_new_corruption__family_level_and_tags_reach_mlflow(invert, tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeps.tracking import MLflowTrialWriter, open_parent_run
    from tests.sweeps.test_tracking import _Trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = open_parent_run(uri, "exp", tmp_path / "art", tmp_path / "parent_id", {})
    trial = _Trial("inv_00000", {})
    trial.config["sweep.cell"]["data.corruption"] = "inv_0.5"
    MLflowTrialWriter(uri, parent).on_trial_start(0, [], trial)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.corruption_family = 'intensity'")
    assert {k: run.data.tags[k] for k in ("corruption", "corruption_kind", "corruption_level", "p")} == {
        "corruption": "inv_0.5",
        "corruption_kind": "inv",
        "corruption_level": "0.5",
        "p": "0.5",
    }


def test_new_corruption__family_level_and_columns_in_the_drop_table(invert):
    rows = [
        ("supervised", c, s, acc) for s in (0, 1) for c, acc in (("ori", 80.0), ("inv_0.5", 60.0), ("inv_0.25", 70.0))
    ]
    df = pd.DataFrame(rows, columns=["method", "corruption", "seed", "knn_acc"])
    annotated = annotate(df).set_index("corruption")
    assert annotated.loc["inv_0.5", "family"].unique().tolist() == ["intensity"]
    assert annotated.loc["inv_0.25", "level"].unique().tolist() == [0.25]
    table = drop_table(df)
    assert list(table.columns) == ["inv_0.25", "inv_0.5", "Avg"]  # ordered by the declared level
    assert table.loc["supervised", "inv_0.5"] == pytest.approx(25.0) and table.loc[
        "supervised", "inv_0.25"
    ] == pytest.approx(12.5)
