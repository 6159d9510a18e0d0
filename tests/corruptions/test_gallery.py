"""corruptions/gallery.py: Figure B.3's columns and a real PNG, from images alone (no training code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from corruptions.gallery import default_columns, render

ROOT = Path(__file__).resolve().parents[2]


def test_default_columns__both_ends_of_every_family_for_the_image_side():
    cols = default_columns(16)
    assert cols[:3] == ["ori", "gam_0.2", "gam_2.5"]
    assert {"glo_2", "glo_16", "loc_2", "loc_8"} <= set(cols) and "loc_16" not in cols  # loc_<side> is the identity


def test_render__writes_a_png_of_images_by_corruptions(tmp_path):
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    out = tmp_path / "g.png"
    render(images, ["ori", "glo_4", "loc_4"], str(out), torch.Generator().manual_seed(0))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_gallery__imports_no_training_code():
    code = "import sys, corruptions.gallery; print(sorted(m for m in sys.modules if m.startswith('trainables')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
