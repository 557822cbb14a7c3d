"""Overlays like the paper's qualitative figures: image | ground truth | prediction, sentence as caption."""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw

GT_COLOUR = (0, 200, 0)
PRED_COLOUR = (230, 40, 40)


def tint(image: Image.Image, mask: np.ndarray, colour, alpha: float = 0.5) -> Image.Image:
    base = np.asarray(image, dtype=np.float32)
    m = mask.astype(bool)[..., None]
    out = np.where(m, base * (1 - alpha) + np.array(colour, dtype=np.float32) * alpha, base)
    return Image.fromarray(out.astype(np.uint8))


def overlay_panel(jpg: bytes | Image.Image, gt: np.ndarray | None, pred: np.ndarray, caption: str) -> Image.Image:
    """One row: image | ground truth (green) | prediction (red), with the sentence underneath."""
    image = jpg if isinstance(jpg, Image.Image) else Image.open(io.BytesIO(jpg))
    image = image.convert("RGB")
    panels = [image] + ([tint(image, gt, GT_COLOUR)] if gt is not None else []) + [tint(image, pred, PRED_COLOUR)]
    w, h = image.size
    lines = textwrap.wrap(caption, width=max(20, len(panels) * w // 7)) or [""]
    canvas = Image.new("RGB", (w * len(panels), h + 14 * len(lines) + 6), "white")
    for i, panel in enumerate(panels):
        canvas.paste(panel, (i * w, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((4, h + 3 + 14 * k), line, fill="black")
    return canvas


def gallery(rows: list[Image.Image]) -> Image.Image:
    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height
    return canvas
