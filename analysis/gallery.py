"""Draw random test images of a dataset x corruptions, like the supplement's Figure B.3.

    python -m analysis.gallery --out gallery.png                       # the embedded shapes
    python -m analysis.gallery --dataset imagefolder:/path/to/cifar10-jpeg --out cifar.png

Columns default to: original, gamma 0.2 and 2.5, global shuffles G2.. G<S>/L1, local shuffles
L2..L<S/2> (every divisor of the image side), so both ends of each family are visible.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from corruptions import CorruptionError, parse
from corruptions.gallery import default_columns, render
from trainables.data.datasets import DatasetError, load_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.gallery", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--dataset", default="shapes", help="registered name or imagefolder:<path> (default: shapes)")
    parser.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    parser.add_argument("--image-size", type=int, default=None, help="resize to this square side")
    parser.add_argument("--corruptions", nargs="+", default=None, help="column specs (default: Figure B.3's)")
    parser.add_argument("--n-images", type=int, default=6, help="rows: random test images")
    parser.add_argument("--seed", type=int, default=0, help="which images are drawn")
    parser.add_argument("--out", default="gallery.png", help="output PNG path")
    args = parser.parse_args(argv)

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
