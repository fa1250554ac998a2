"""Maps over images, as PNG panels with a colour scale (Pillow only: no plotting library needed).

Signed maps (how much the caption lowers the error: negative where it hurts) use a diverging
blue-white-red scale centred on 0, so "helps" and "hurts" never share a colour; non-negative maps
(attention a word receives) use a sequential dark-to-yellow scale from the map's minimum to its maximum.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 224      # pixels of one map panel
BAR = 10         # height of the colour bar
TEXT = 16        # height of a text line
DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
SEQUENTIAL = ((0.0, (0, 0, 4)), (0.35, (120, 28, 109)), (0.7, (237, 105, 37)), (1.0, (252, 255, 164)))


def colours(values: np.ndarray, stops: Sequence[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 by piecewise-linear interpolation between `stops`."""
    positions = np.array([p for p, _ in stops])
    rgb = np.array([c for _, c in stops], dtype=np.float64)
    clipped = np.clip(values, 0.0, 1.0)
    channels = [np.interp(clipped, positions, rgb[:, k]) for k in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def scale_of(values: np.ndarray, signed: bool) -> tuple[float, float]:
    """(low, high) of a map's colour scale: symmetric about 0 when signed (the sign is the message),
    the map's own minimum to maximum otherwise (attention spreads thinly over every position, so a
    scale from 0 would paint all of it one colour); the bar prints both ends."""
    if not values.size:
        return (0.0, 1.0)
    if signed:
        peak = float(np.abs(values).max()) or 1.0
        return (-peak, peak)
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low, low + 1.0)


def overlay(image: Image.Image, values: np.ndarray, signed: bool, size: int = PANEL) -> Image.Image:
    """The map upsampled (bicubic) onto a grayscale copy of `image`, blended 60 % map, 40 % image."""
    low, high = scale_of(values, signed)
    unit = (values - low) / (high - low)
    up = np.asarray(Image.fromarray(unit.astype(np.float32), "F").resize((size, size), Image.BICUBIC))
    stops = DIVERGING if signed else SEQUENTIAL
    heat = colours(up, stops).astype(np.float64)
    base = np.asarray(image.convert("L").resize((size, size), Image.BICUBIC), dtype=np.float64)[..., None]
    return Image.fromarray((0.6 * heat + 0.4 * base).round().astype(np.uint8), "RGB")


def colour_bar(low: float, high: float, signed: bool, width: int = PANEL) -> Image.Image:
    """A horizontal colour scale labelled with its two ends (and 0 in the middle when signed)."""
    bar = Image.new("RGB", (width, BAR + TEXT), "white")
    ramp = colours(np.linspace(0, 1, width)[None, :].repeat(BAR, 0), DIVERGING if signed else SEQUENTIAL)
    bar.paste(Image.fromarray(ramp, "RGB"), (0, 0))
    draw, font = ImageDraw.Draw(bar), _font()
    draw.text((0, BAR + 1), f"{low:.3g}", fill="black", font=font)
    draw.text((width, BAR + 1), f"{high:.3g}", fill="black", font=font, anchor="ra")
    if signed:
        draw.text((width // 2, BAR + 1), "0", fill="black", font=font, anchor="ma")
    return bar


def panel(image: Image.Image, values: np.ndarray | None, title: str, signed: bool = False) -> Image.Image:
    """Title, the map over the image (the image alone when `values` is None) and its colour bar."""
    out = Image.new("RGB", (PANEL, TEXT + PANEL + BAR + TEXT), "white")
    draw = ImageDraw.Draw(out)
    draw.text((2, 1), _fit(title, draw), fill="black", font=_font())
    if values is None:
        out.paste(image.convert("RGB").resize((PANEL, PANEL), Image.BICUBIC), (0, TEXT))
        return out
    out.paste(overlay(image, values, signed), (0, TEXT))
    out.paste(colour_bar(*scale_of(values, signed), signed), (0, TEXT + PANEL))
    return out


def sheet(panels: Sequence[Image.Image], heading: str, columns: int = 4) -> Image.Image:
    """Panels in rows of `columns` under a one-line heading."""
    rows = -(-len(panels) // columns)
    width, height = panels[0].size
    gap = 8
    out = Image.new("RGB", (columns * (width + gap) + gap, TEXT + 8 + rows * (height + gap) + gap), "white")
    draw = ImageDraw.Draw(out)
    draw.text((gap, 4), heading, fill="black", font=_font())
    for i, item in enumerate(panels):
        out.paste(item, (gap + (i % columns) * (width + gap), TEXT + 8 + (i // columns) * (height + gap)))
    return out


def _fit(text: str, draw: ImageDraw.ImageDraw) -> str:
    """`text` shortened with an ellipsis until it fits one panel's width."""
    font = _font()
    if draw.textlength(text, font=font) <= PANEL - 4:
        return text
    while text and draw.textlength(text + "…", font=font) > PANEL - 4:
        text = text[:-1]
    return text + "…"


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        return ImageFont.load_default()
