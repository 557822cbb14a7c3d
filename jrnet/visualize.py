"""Overlays like the paper's qualitative figures: image | ground truth | prediction, sentence as caption."""

from __future__ import annotations

import io
import textwrap

import numpy as np
from PIL import Image, ImageDraw

# Saturated colours far apart: whatever the object's colour, one of them stands out against it.
HIGHLIGHTS = np.array([(255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)], dtype=np.float32)


def contrasting(pixels: np.ndarray) -> np.ndarray:
    """The highlight colour farthest from the mean colour of `pixels` (N, 3)."""
    mean = pixels.mean(axis=0) if len(pixels) else np.zeros(3, dtype=np.float32)
    return HIGHLIGHTS[np.argmax(((HIGHLIGHTS - mean) ** 2).sum(axis=1))]


def outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def highlight(image: Image.Image, mask: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """A mask drawn so that it shows on any object: a tint and a solid contour in a colour contrasting with it."""
    base = np.asarray(image, dtype=np.float32)
    m = mask.astype(bool)
    colour = contrasting(base[m])
    out = base.copy()
    out[m] = base[m] * (1 - alpha) + colour * alpha
    out[outline(m)] = colour
    return Image.fromarray(out.astype(np.uint8))


def overlay_panel(jpg: bytes | Image.Image, gt: np.ndarray | None, pred: np.ndarray, caption: str) -> Image.Image:
    """One row: image | ground truth | prediction, with the sentence underneath."""
    image = jpg if isinstance(jpg, Image.Image) else Image.open(io.BytesIO(jpg))
    image = image.convert("RGB")
    panels = [image] + ([highlight(image, gt)] if gt is not None else []) + [highlight(image, pred)]
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
