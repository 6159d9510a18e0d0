"""Matplotlib set-up shared by the figures: headless backend, arm colours, PNG/base64 output."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files and report images, never windows
import matplotlib.pyplot as plt

from analysis.frame import UNTRAINED

__all__ = ["arm_color", "data_uri", "plt", "png_bytes", "save"]


def arm_color(arm: str, arms: list[str]) -> str:
    """A stable colour per arm of a figure; the untrained reference is grey."""
    if arm == UNTRAINED:
        return "0.75"
    trained = [a for a in arms if a != UNTRAINED]
    return f"C{trained.index(arm) % 10}" if arm in trained else "C9"


def png_bytes(fig, dpi: int = 130) -> bytes:
    """Render and close a figure; returns the PNG file's bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding a PNG in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save(fig, path: Path) -> bytes:
    """Write a figure as PNG and return its bytes (for embedding as well)."""
    png = png_bytes(fig)
    Path(path).write_bytes(png)
    return png
