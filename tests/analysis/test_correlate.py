"""Uniformity/ECE vs accuracy: per family, per method and pooled within methods."""

from __future__ import annotations

import pytest

from analysis.correlate import POOLED, correlation_table, scatter_figure
from tests.analysis.conftest import frame

# Within each method uniformity rises with accuracy; moco_v2 sits lower on both axes.
ACC = {"ori": 80, "glo_2": 70, "glo_4": 60, "glo_8": 40, "loc_8": 75, "loc_4": 65}
UNIF = {"ori": 2.5, "glo_2": 2.4, "glo_4": 2.2, "glo_8": 2.1, "loc_8": 2.45, "loc_4": 2.3}


def sweep():
    accs = {(arm, c): [a - shift] for arm, shift in (("supervised", 0), ("moco_v2", 30)) for c, a in ACC.items()}
    unif = {(arm, c): [u + shift] for arm, shift in (("supervised", 0), ("moco_v2", 1.0)) for c, u in UNIF.items()}
    accs[("untrained", "ori")], unif[("untrained", "ori")] = [10], [5.0]  # would spoil every r if included
    ece = {"ori": 3, "glo_2": 1, "glo_4": 4, "glo_8": 2, "loc_8": 1, "loc_4": 3}
    df = frame(accs, unif)
    return df.assign(ece=[ece.get(c, 0) for c in df["data.corruption"]])


def test_correlation_table__known_monotone_family_gives_spearman_one():
    t = correlation_table(sweep(), n_boot=200).set_index(["quantity", "family", "arm"])
    glob = t.loc[("uniformity", "global", "supervised")]
    assert glob["n"] == 4 and glob["spearman"] == pytest.approx(1.0)  # ori + 3 global levels
    assert t.loc[("uniformity", "local", POOLED), "n"] == 6 and t.loc[
        ("uniformity", "local", POOLED), "spearman"
    ] == pytest.approx(1.0)
    assert t.loc[("uniformity", "all", POOLED), "spearman"] == pytest.approx(1.0)


def test_correlation_table__pooling_within_methods_ignores_their_offsets():
    t = correlation_table(sweep(), n_boot=200).set_index(["quantity", "family", "arm"])
    # moco_v2 has lower accuracy and higher uniformity: a raw pooled r would be dragged negative.
    assert t.loc[("uniformity", "all", POOLED), "pearson"] > 0.9


def test_correlation_table__ece_is_correlated_too_and_untrained_left_out():
    t = correlation_table(sweep(), n_boot=200)
    assert set(t["quantity"]) == {"uniformity", "ece"}
    assert "untrained" not in set(t["arm"])
    ece = t.set_index(["quantity", "family", "arm"]).loc[("ece", "global", "supervised"), "spearman"]
    assert abs(ece) < 0.5


def test_scatter_figure__one_panel_per_quantity_and_family():
    fig = scatter_figure(sweep())
    assert len(fig.axes) == 2 * 2  # (uniformity, ece) x (global, local)
