"""t-SNE embeddings keep well-separated classes apart and are reproducible."""

from __future__ import annotations

import numpy as np
import torch

from analysis.tsne import embed, tsne_figure


def clusters(n: int = 30) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:3] * 5
    labels = np.repeat(np.arange(3), n)
    return centres[labels] + 0.3 * torch.randn(3 * n, 16, generator=g), labels


def test_embed__separated_classes_stay_separated_and_the_result_is_deterministic():
    feats, labels = clusters()
    xy = embed(feats)
    assert xy.shape == (90, 2)
    nearest = np.argsort(((xy[:, None] - xy[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() > 0.95
    np.testing.assert_allclose(embed(feats), xy)


def test_tsne_figure__one_panel_per_trial():
    feats, labels = clusters(10)
    panel = {"xy": embed(feats), "labels": labels, "title": "t", "classes": ("a", "b", "c")}
    fig = tsne_figure([panel, panel, panel], columns=2)
    assert sum(ax.axison for ax in fig.axes) == 0 and len([a for a in fig.axes if a.collections]) == 3
