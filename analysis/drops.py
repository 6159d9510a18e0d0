"""Accuracy and accuracy-drop tables: pure functions of a tidy DataFrame.

Input rows are trials with columns ``method``, ``corruption``, ``seed`` and metric columns.
The drop is the study's relative drop ``100 * (A_ori - A_c) / A_ori``, each corrupted trial
matched with the clean (``ori``) trial of the same method and seed.
"""

from __future__ import annotations

import pandas as pd

from corruptions import parse


def corruption_order(specs) -> list[str]:
    """``ori`` first, then by kind and parameter (glo_2, glo_4, ..., loc_2, ..., gam_0.1, ...)."""

    def key(spec: str):
        d = parse(spec).to_dict()
        value = next((d[k] for k in ("grid", "gamma", "severity") if k in d), 0)
        return (spec != "ori", d["name"], float(value))

    return sorted(set(specs), key=key)


def accuracy_table(df: pd.DataFrame, metric: str = "knn_acc") -> pd.DataFrame:
    """method x corruption table of the metric's mean over seeds."""
    table = df.pivot_table(index="method", columns="corruption", values=metric, aggfunc="mean")
    return table[corruption_order(table.columns)]


def relative_drops(df: pd.DataFrame, metric: str = "knn_acc") -> pd.DataFrame:
    """One row per corrupted trial with its matched clean accuracy and relative drop (%)."""
    clean = df[df.corruption == "ori"][["method", "seed", metric]].rename(columns={metric: "clean"})
    merged = df[df.corruption != "ori"].merge(clean, on=["method", "seed"], how="inner")
    merged["drop"] = 100 * (merged["clean"] - merged[metric]) / merged["clean"]
    return merged


def drop_table(df: pd.DataFrame, metric: str = "knn_acc") -> pd.DataFrame | None:
    """method x corruption mean relative drop (%) with an ``Avg`` column; None without ori trials."""
    drops = relative_drops(df, metric)
    if drops.empty:
        return None
    table = drops.pivot_table(index="method", columns="corruption", values="drop", aggfunc="mean")
    table = table[corruption_order(table.columns)]
    table["Avg"] = table.mean(axis=1)
    return table
