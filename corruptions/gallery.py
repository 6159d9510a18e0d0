"""Draw random images x corruptions, like the supplement's Figure B.3.

    python -m corruptions.gallery --dataset digits --out gallery.png
    python -m corruptions.gallery --dataset imagefolder:/path/to/cifar10-jpeg --out cifar.png

Columns default to: original, gamma 0.2 and 2.5, global shuffles G2.. G<S>/L1, local shuffles
L2..L<S/2> (every divisor of the image side), so both ends of each family are visible.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from corruptions import Corruption, CorruptionError, divisors, parse


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corruptions.gallery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="registered name or imagefolder:<path> (default: digits)")
    parser.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    parser.add_argument("--image-size", type=int, default=None, help="resize to this square side")
    parser.add_argument("--corruptions", nargs="+", default=None, help="column specs (default: Figure B.3's)")
    parser.add_argument("--n-images", type=int, default=6, help="rows: random test images")
    parser.add_argument("--seed", type=int, default=0, help="which images are drawn")
    parser.add_argument("--out", default="gallery.png", help="output PNG path")
    args = parser.parse_args(argv)

    from trainables.data.datasets import DatasetError, load_dataset

    try:
        data = load_dataset(args.dataset, image_size=args.image_size, data_dir=args.data_dir)
        specs = args.corruptions or default_columns(data.image_size[0])
        for s in specs:
            parse(s).check(*data.image_size)
    except (CorruptionError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(data.test), generator=g)[: args.n_images]
    render(data.test.images[pick], specs, args.out, g)
    print(f"wrote {args.out}: {len(pick)} images x {len(specs)} corruptions ({', '.join(specs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
