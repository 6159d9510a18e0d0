"""t-SNE of a trial's evaluation features, coloured by class (the study's uniformity panels).

Features: the trial's backbone on (a per-class subset of) its test split under its evaluation
corruption, L2-normalised as for uniformity. Embedded with scikit-learn's Barnes-Hut t-SNE
(PCA init, fixed seed), so the same trial always gives the same picture.

    python -m analysis.tsne --experiment grid_patch_sizes-shapes [--method moco_v2] [--per-class 50]
"""

from __future__ import annotations

import sys

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from analysis import cli
from trainables.metrics import UNIFORMITY


def embed(features: Tensor, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE coordinates of the L2-normalised features.

    The perplexity is capped at (N - 1) / 3, which t-SNE needs to be well defined.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    z = F.normalize(features.float(), dim=1).numpy()
    perplexity = max(1.0, min(perplexity, (len(z) - 1) / 3))
    # One thread: for a few hundred points OpenMP's threads cost more than they save, and on a
    # busy machine they spin-wait (measured 0.2 s vs 1-30 s for 90 points on 2 loaded cores).
    with threadpool_limits(1):
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def trial_panel(row, per_class: int = 50) -> dict:
    """Coordinates, labels and a title for one trial row (network rebuilt from its checkpoint)."""
    from analysis.trial_model import load_trial

    trial = load_trial(row)
    feats, labels = trial.features(trial.data.test, trial.cfg.eval_corruption, per_class=per_class)
    uniformity = row.get(UNIFORMITY, float("nan"))
    title = f"{row['arm']} · {row['corruption']} · U={uniformity:.2f}"
    return {"xy": embed(feats), "labels": labels.numpy(), "title": title, "classes": trial.data.classes}


def tsne_figure(panels: list[dict], columns: int = 4):
    """A grid of t-SNE scatter plots, one per panel, a colour per class."""
    from analysis.figures import plt

    rows = -(-len(panels) // columns)
    cols = min(columns, len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, p in zip(axes.flat, panels, strict=False):
        ax.scatter(p["xy"][:, 0], p["xy"][:, 1], c=p["labels"], cmap="tab10", vmin=0, vmax=9, s=5)
        ax.set_title(p["title"], fontsize=7)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=plt.cm.tab10(c % 10), markersize=4)
        for c in range(len(panels[0]["classes"]))
    ]
    fig.legend(
        handles, panels[0]["classes"], loc="lower center", ncols=min(10, len(handles)), fontsize=6, frameon=False
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def main(argv: list[str] | None = None) -> int:
    """CLI: one figure with a t-SNE panel per selected trial."""
    p = cli.parser(__doc__)
    p.add_argument("--method", help="method (or 'untrained'); default: all")
    p.add_argument("--corruption", help="default: ori and one per family")
    p.add_argument("--seed", type=int, help="default: the lowest seed")
    p.add_argument("--per-class", type=int, default=50, help="test images per class (default: %(default)s)")
    return cli.run(_main, p.parse_args(argv))


def _main(args) -> None:
    from analysis import figures
    from analysis.trial_model import select_trials, showcase

    df, source = cli.load(args)
    rows = select_trials(df, args.method, args.corruption, args.seed)
    if args.corruption is None:
        rows = showcase(rows)
    panels = [trial_panel(row, args.per_class) for _, row in rows.head(12).iterrows()]
    figures.save(tsne_figure(panels), source.out / "tsne.png")
    print(f"written: {source.out}/tsne.png ({len(panels)} trials)")


if __name__ == "__main__":
    sys.exit(main())
