"""One picture of a whole volume: the overlays of its explained slices (or a DICOM's frames) in a
grid, each labelled with its slice number, so a person sees the volume at a glance (numpy and
Pillow only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TILE_LONG_SIDE = 256  # a slice's long side in the mosaic, at most
TILE_LEAST_SIDE = 128  # smaller slices are enlarged to this, so their labels can be read
MOSAIC_MAX_WIDTH = 4096  # tiles shrink so that a volume of many slices stays this wide
GAP = 2  # black pixels between tiles
MISSING_GRAY = 48  # a slice that failed: its cell stays dark, with its label


def grid_columns(count: int) -> int:
    """Columns of the grid for ``count`` tiles: as square as the count allows."""
    return max(1, math.ceil(math.sqrt(count)))


def tile_size(image_size: tuple[int, int], count: int) -> tuple[int, int]:
    """(height, width) of each of ``count`` tiles for images of ``image_size`` (height, width):
    the image's own size, brought into ``TILE_LEAST_SIDE``..``TILE_LONG_SIDE`` on the long side,
    and smaller when that keeps the grid within ``MOSAIC_MAX_WIDTH``."""
    height, width = image_size
    long_side = min(max(TILE_LEAST_SIDE, min(max(height, width), TILE_LONG_SIDE)),
                    MOSAIC_MAX_WIDTH // grid_columns(count) - GAP)
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class Sheet:
    """The tiles of one file, method and explained class, in slice order; a cell without a
    tile is a slice that failed."""

    labels: list[str] = field(default_factory=list)
    tiles: list[np.ndarray | None] = field(default_factory=list)

    def add(self, label: str, drawn: np.ndarray | None) -> None:
        self.labels.append(label)
        self.tiles.append(drawn)

    def compose(self) -> np.ndarray:
        """The grid: (rows (h + GAP) + GAP, columns (w + GAP) + GAP, 3) uint8 on black."""
        return compose(self.labels, self.tiles)


def compose(labels: Sequence[str], tiles: Sequence[np.ndarray | None]) -> np.ndarray:
    """Tiles (all (h, w, 3) uint8, or None for a missing one) in a grid, row by row, each with
    its label at its top left in white on black."""
    height, width = next(t.shape[:2] for t in tiles if t is not None) if any(t is not None for t in tiles) else (64, 64)
    columns = grid_columns(len(tiles))
    rows = math.ceil(len(tiles) / columns)
    canvas = Image.new("RGB", (columns * (width + GAP) + GAP, rows * (height + GAP) + GAP))
    draw = ImageDraw.Draw(canvas)
    for position, (label, drawn) in enumerate(zip(labels, tiles)):
        left = GAP + (position % columns) * (width + GAP)
        top = GAP + (position // columns) * (height + GAP)
        if drawn is None:
            draw.rectangle((left, top, left + width - 1, top + height - 1), fill=(MISSING_GRAY,) * 3)
        else:
            canvas.paste(Image.fromarray(drawn), (left, top))
        draw_label(draw, label, left, top, width)
    return np.asarray(canvas)


def draw_label(draw: ImageDraw.ImageDraw, label: str, left: int, top: int, width: int) -> None:
    """``label`` in white on black at the top left of a picture placed at (``left``, ``top``),
    cut to the picture's ``width``."""
    font = ImageFont.load_default()
    text = _fitted(draw, label, font, width - 4)
    if text:
        box = draw.textbbox((left + 2, top + 1), text, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
        draw.text((left + 2, top + 1), text, fill=(255, 255, 255), font=font)


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` cut from its end until it fits ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text
