"""Feature geometry over epochs: history in between, the untrained reference at epoch 0."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.dynamics import OVERALL, dynamics_figure, dynamics_frame, geometry


def trials():
    base = {"data.corruption": "ori", "system.seed": 0, "model.width": 0.125, "data.dataset": "digits"}
    return pd.DataFrame(
        [
            {
                **base,
                "method": "moco_v2",
                "optim.epochs": 4,
                "run_id": "r1",
                "uniformity": 2.0,
                "classwise_uniformity": [1.0, 1.2],
                "feature_distance": [[0.4, 1.0], [1.0, 0.6]],
            },
            {
                **base,
                "method": "supervised",
                "optim.epochs": 0,
                "run_id": "r0",
                "uniformity": 0.5,
                "classwise_uniformity": [0.1, 0.3],
                "feature_distance": [[0.1, 0.2], [0.2, 0.3]],
            },
            {
                **base,
                "method": "moco_v2",
                "optim.epochs": 0,
                "run_id": "rx",
                "uniformity": 9.0,
                "classwise_uniformity": [9, 9],
                "feature_distance": [[9, 9], [9, 9]],
                "model.width": 1.0,
            },
        ]
    )


def test_geometry__intra_is_the_diagonal_and_inter_the_mean_off_diagonal():
    g = {(q, c): v for q, c, v in geometry(trials().iloc[0])}
    assert g[("intra", 0)] == 0.4 and g[("intra", 1)] == 0.6 and g[("inter", 0)] == 1.0
    assert g[("uniformity", OVERALL)] == 2.0 and g[("classwise_uniformity", 1)] == 1.2


def test_geometry__reads_the_logged_per_class_values_instead_of_recomputing_them():
    row = trials().iloc[0].copy()
    for key, value in {
        "intra_distance/0": 0.25,
        "intra_distance/1": 0.75,
        "inter_distance/0": 3.0,
        "inter_distance/1": 4.0,
    }.items():
        row[key] = value
    g = {(q, c): v for q, c, v in geometry(row)}
    assert (g[("intra", 0)], g[("intra", 1)], g[("inter", 0)], g[("inter", 1)]) == (0.25, 0.75, 3.0, 4.0)


def test_dynamics_frame__untrained_trial_of_the_same_seed_and_backbone_is_epoch_zero():
    history = pd.DataFrame(
        {
            "run_id": ["r1", "r1"],
            "trial_id": [None, None],
            "epoch": [2, 4],
            "metric": ["uniformity", "uniformity"],
            "value": [1.5, 2.0],
        }
    )
    d = dynamics_frame(trials(), history)
    overall = d[(d["quantity"] == "uniformity")].set_index("epoch")["value"]
    assert overall.to_dict() == {0: 0.5, 2: 1.5, 4: 2.0}  # the width-1.0 untrained trial is not a match
    assert set(d["arm"]) == {"moco_v2"}
    classwise = d[d["quantity"] == "classwise_uniformity"]
    assert sorted(classwise["epoch"].unique()) == [0, 4]
    assert classwise[classwise["epoch"] == 0]["value"].tolist() == pytest.approx([0.1, 0.3])


def test_dynamics_frame__per_class_history_gives_every_quantity_at_every_evaluation():
    metrics = [
        "classwise_uniformity/0",
        "classwise_uniformity/1",
        "intra_distance/1",
        "inter_distance/0",
        "intra_distance",
        "knn_acc",
    ]  # class means and other metrics are not per-class rows
    history = pd.DataFrame(
        {"run_id": "r1", "trial_id": None, "epoch": 2, "metric": metrics, "value": [0.7, 0.8, 0.45, 0.9, 0.5, 60.0]}
    )
    d = dynamics_frame(trials(), history).set_index(["epoch", "quantity", "cls"])["value"]
    assert d[(2, "classwise_uniformity", 1)] == 0.8 and d[(2, "intra", 1)] == 0.45 and d[(2, "inter", 0)] == 0.9
    assert sorted(d.xs("intra", level="quantity").index.get_level_values("epoch").unique()) == [0, 2, 4]
    assert (2, "intra", OVERALL) not in d.index and len(d.xs(2, level="epoch")) == 4


def test_dynamics_figure__a_column_per_method():
    fig = dynamics_figure(dynamics_frame(trials()))
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "moco_v2 (ori)"
