"""Draw images x corruptions, like the supplement's Figure B.3: ``render(images, specs, out, g)``.

It takes images, so ``corruptions`` stays usable without the training code; the command that
loads a dataset and draws it is ``python -m analysis.gallery``.

Columns default to: original, gamma 0.2 and 2.5, global shuffles G2.. G<S>/L1, local shuffles
L2..L<S/2> (every divisor of the image side), so both ends of each family are visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from corruptions import Corruption, divisors, parse


def default_columns(size: int) -> list[str]:
    """Figure B.3's column order for an image side ``size``."""
    grids = divisors(size)
    return (
        ["ori", "gam_0.2", "gam_2.5"]
        + [f"glo_{n}" for n in grids if n > 1]
        + [f"loc_{n}" for n in reversed(grids) if 1 < n < size]
    )


def column_title(c: Corruption, size: int) -> str:
    """Short labels as in the figure: G4x4, L8x8, gamma=0.2, G32x32/L1x1."""
    d = c.to_dict()
    if d["name"] in ("glo", "loc"):
        title = f"{d['name'][0].upper()}{d['grid']}x{d['grid']}"
        return title + ("/L1x1" if d["name"] == "glo" and d["grid"] == size else "")
    if d["name"] == "gam":
        return f"γ={d['gamma']:g}"
    return str(c)


def render(images: torch.Tensor, specs: Sequence[str], out: str, generator: torch.Generator) -> None:
    """Save a grid: rows = images (N, C, H, W) uint8, columns = corruptions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = images.shape[-1]
    cols = [parse(s) for s in specs]
    fig, axes = plt.subplots(len(images), len(cols), figsize=(1.3 * len(cols), 1.3 * len(images) + 0.4), squeeze=False)
    for j, c in enumerate(cols):
        corrupted = c(images, generator)
        axes[0, j].set_title(column_title(c, size), fontsize=9)
        for i, img in enumerate(corrupted):
            axes[i, j].imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[i, j].set_axis_off()
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=120)
    plt.close(fig)
