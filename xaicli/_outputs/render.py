"""Turn heatmaps into pictures: normalize, upsample, colour, blend (numpy and Pillow only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .._inputs.geometry import VIEWING_SIDE, View, output_size, shown_at, view_at
from . import colormap_data

LUT_SIZE = 256


def jet_lut() -> np.ndarray:
    """The classic 'jet' colormap as a lookup table.

    Returns:
        (256, 3) uint8 RGB; row 0 is dark blue (low), row 255 dark red (high).
    """
    v = np.linspace(0.0, 1.0, LUT_SIZE)
    # Piecewise-linear ramps of MATLAB's jet: each channel is a tent centred at 3/4, 1/2, 1/4.
    channels = [np.clip(1.5 - np.abs(4.0 * v - centre), 0.0, 1.0) for centre in (3.0, 2.0, 1.0)]
    return np.round(np.stack(channels, axis=1) * 255.0).astype(np.uint8)


def gray_lut() -> np.ndarray:
    """(256, 3) uint8 black-to-white ramp."""
    return np.repeat(np.arange(LUT_SIZE, dtype=np.uint8)[:, None], 3, axis=1)


def _table(hex_rows: tuple[str, ...]) -> np.ndarray:
    return np.frombuffer(bytes.fromhex("".join(hex_rows)), dtype=np.uint8).reshape(LUT_SIZE, 3).copy()


COLORMAPS = {
    "jet": jet_lut,
    "turbo": lambda: _table(colormap_data.TURBO),
    "viridis": lambda: _table(colormap_data.VIRIDIS),
    "inferno": lambda: _table(colormap_data.INFERNO),
    "gray": gray_lut,
}


def normalize_maps(raw: np.ndarray) -> np.ndarray:
    """Min-max normalize each map of a batch on its own.

    Args:
        raw: (N, h, w) real-valued maps (a volume model's (N, d, h, w)); NaN or infinite values
            count as no evidence.

    Returns:
        The same shape, float32 in [0, 1]. A map that is constant (e.g. no positive evidence
        after ReLU) becomes all zeros rather than NaN.
    """
    maps = np.nan_to_num(np.asarray(raw, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    positions = tuple(range(1, maps.ndim))
    low = maps.min(axis=positions, keepdims=True)
    span = maps.max(axis=positions, keepdims=True) - low
    flat = span <= np.finfo(np.float32).tiny
    scaled = (maps - low) / np.where(flat, 1.0, span)
    return np.where(flat, 0.0, scaled).astype(np.float32)


def upsample(heatmap: np.ndarray, size: tuple[int, int], view: View | None = None,
             rows: slice | None = None) -> np.ndarray:
    """Put one map back onto its original image: resize it as values (bilinear, pixel-centre
    aligned) from the part of the model input that holds the image to the part of the image
    the model saw.

    Args:
        heatmap: (h, w) float in [0, 1], covering the whole model input.
        size: (height, width) of the original image.
        view: how the model input was cut from the image (``images.fit_view``); None = stretched.
        rows: only these rows of the result (``slice(start, stop)``), computed as part of the
            whole: Pillow places each output row by its own centre, so a strip is the same rows.

    Returns:
        (rows, width) float32 in [0, 1], NaN where the model never saw the image (outside a
        centre crop); rows = height unless ``rows`` is given.
    """
    height, width = size
    first, last = (0, height) if rows is None else (rows.start, min(rows.stop, height))
    view = view or View.whole(height, width)
    map_height, map_width = heatmap.shape
    x0, y0, x1, y1 = view.placed
    left, top, right, bottom = (int(round(v)) for v in view.seen)
    seen_height, seen_width = max(1, bottom - top), max(1, right - left)
    start, stop = max(first, top), min(last, top + seen_height)  # rows of the strip the model saw
    shape = (last - first, width)
    if start >= stop:
        return np.full(shape, np.nan, np.float32)
    span = (y1 - y0) * map_height / seen_height  # map rows per image row
    box = (x0 * map_width, y0 * map_height + (start - top) * span,
           x1 * map_width, y0 * map_height + (stop - top) * span)
    values = _resized(heatmap, (max(1, stop - start), seen_width), box)
    if (start, stop, left, right) == (first, last, 0, width) and values.shape == shape:
        return values
    placed = np.full(shape, np.nan, np.float32)
    placed[start - first:stop - first, left:right] = values[:stop - start, :right - left]
    return placed


def _resized(heatmap: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """The ``box`` of the map resized bilinearly to ``size`` (rows, columns), clipped to [0, 1]."""
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize(
        (size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    unclipped = np.frombuffer(resized.tobytes(), np.float32).reshape(size)
    del resized  # a float copy of a 24-MP map is 96 MB: hold at most two at a time
    return np.clip(unclipped, 0.0, 1.0)


UNSEEN_GRAY = 128  # colour of pixels the model never saw, in a colorized heatmap
STRIP_PIXELS = 1 << 18  # pixels upsampled, coloured and blended at a time (whole rows, at least one)


def colorize(heatmap: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] of shape (H, W) to (H, W, 3) uint8 colours via ``lut`` (256, 3);
    NaN (never seen by the model) becomes mid gray."""
    return np.asarray(_coloured(heatmap, lut))


def _coloured(heatmap: np.ndarray, lut: np.ndarray) -> Image.Image:
    """``colorize`` as a Pillow RGB image. The lookup runs in C as a palette conversion, 5x
    faster than indexing the table with numpy."""
    unseen = np.isnan(heatmap)
    has_unseen = bool(unseen.any())
    values = np.where(unseen, 0.0, heatmap) if has_unseen else heatmap
    scaled = np.clip(values, 0.0, 1.0)
    scaled *= LUT_SIZE - 1
    index = np.rint(scaled, out=scaled).astype(np.uint8)
    picture = Image.fromarray(index, mode="L")
    picture.putpalette(np.ascontiguousarray(lut, dtype=np.uint8).tobytes())
    picture = picture.convert("RGB")
    if has_unseen:
        colour = np.array(picture)
        colour[unseen] = UNSEEN_GRAY
        picture = Image.fromarray(colour)
    return picture


@dataclass(frozen=True)
class Drawing:
    """A picture produced a strip of rows at a time, so a 24-MP output never exists whole in
    memory unless its file format needs it: ``strips`` yields (rows, width[, 3]) uint8 arrays,
    top to bottom, ``height`` rows in all; iterate it once."""

    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (RGB)
    strips: Iterable[np.ndarray]

    def pixels(self) -> np.ndarray:
        """The whole picture: (height, width) or (height, width, 3) uint8."""
        return np.concatenate(list(self.strips))


Original = Union[np.ndarray, Image.Image]  # (H, W, 3) uint8, or an RGB picture (images.open_image)


def draw_overlay(image: Original, heatmap: np.ndarray, alpha: float, lut: np.ndarray,
                 view: View | None = None, outline: np.ndarray | None = None) -> Drawing:
    """A coloured heatmap blended over an image at the image's own size.

    Args:
        image: the RGB original.
        heatmap: (h, w) float in [0, 1], any size; upsampled to the image's size.
        alpha: weight of the heatmap colour, in [0, 1]; 0 shows only the image.
        lut: (256, 3) uint8 colormap.
        view: how the model input was cut from the image; None = stretched.
        outline: a region (h', w') in [0, 1] on the model's output grid, drawn as its outline
            (``OUTLINE_COLOUR``); None draws none.

    Returns:
        (H, W, 3) strips: ``(1 - alpha) * image + alpha * colour``, rounded half up; the image
        unchanged where the model never saw it.
    """
    picture = _picture(image)
    size = (picture.height, picture.width)

    def strips() -> Iterator[np.ndarray]:
        for rows in _strips(*size):
            values = upsample(heatmap, size, view, rows)
            yield _with_outline(_blended(_cropped(picture, rows), values, _coloured(values, lut), alpha),
                                outline, size, view, rows)

    return Drawing(size[0], size[1], 3, strips())


OUTLINE_COLOUR = (255, 255, 255)


def _with_outline(strip: np.ndarray, region: np.ndarray | None, size: tuple[int, int], view: View | None,
                  rows: slice) -> np.ndarray:
    """``strip`` (rows of an image of ``size``) with the outline of ``region`` (on the model's
    output grid, put back onto the image as the map is) drawn over it: the region's pixels
    within ``outline_width(size)`` of its edge. The image's own border is no edge."""
    if region is None:
        return strip
    width = outline_width(size)
    first, last = max(0, rows.start - width), min(size[0], rows.stop + width)
    values = upsample(region, size, view, slice(first, last))
    inside = np.nan_to_num(values, nan=0.0) > 0.5
    padded = Image.fromarray(np.pad(inside, width, mode="edge").astype(np.uint8) * 255, mode="L")
    kept = np.asarray(padded.filter(ImageFilter.MinFilter(2 * width + 1)))[width:-width, width:-width] > 0
    edge = (inside & ~kept)[rows.start - first:rows.stop - first]
    strip[edge] = OUTLINE_COLOUR
    return strip


def outline_width(size: tuple[int, int]) -> int:
    """Pixels of an outline on an image of ``size``: 1 up to 400 pixels on the long side, then wider."""
    return max(1, round(max(size) / 400))


def overlay(image: Original, heatmap: np.ndarray, alpha: float, lut: np.ndarray, view: View | None = None,
            outline: np.ndarray | None = None) -> np.ndarray:
    """``draw_overlay`` as one (H, W, 3) uint8 array."""
    return draw_overlay(image, heatmap, alpha, lut, view, outline).pixels()


def _picture(image: Original) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image, np.uint8))


def _cropped(picture: Image.Image, rows: slice) -> Image.Image:
    return picture.crop((0, rows.start, picture.width, rows.stop))


def strip_rows(width: int) -> int:
    """Rows in a strip of an image ``width`` pixels wide: an ordinary photo is one strip."""
    return max(1, STRIP_PIXELS // width)


def _strips(height: int, width: int) -> list[slice]:
    rows = strip_rows(width)
    return [slice(top, min(top + rows, height)) for top in range(0, height, rows)]


def _blended(original: Image.Image, values: np.ndarray, colour: Image.Image, alpha: float) -> np.ndarray:
    """``original`` and the colours of its upsampled map ``values`` blended, as (rows, W, 3)
    uint8; unseen parts kept as they are."""
    # Pillow blends in C in one pass, ~8x faster than the same formula as numpy array operations.
    blended = np.array(Image.blend(original, colour, alpha))
    unseen = np.isnan(values)
    if unseen.any():
        blended[unseen] = np.asarray(original)[unseen]
    return blended


def draw_heatmap(heatmap: np.ndarray, size: tuple[int, int], view: View | None = None) -> Drawing:
    """The map put back onto an image of ``size`` (height, width) as (H, W) uint8 grayscale
    strips, 0..255; 0 where the model never saw the image."""
    def strips() -> Iterator[np.ndarray]:
        for rows in _strips(*size):
            yield np.rint(np.nan_to_num(upsample(heatmap, size, view, rows)) * 255.0).astype(np.uint8)

    return Drawing(size[0], size[1], 1, strips())


def heatmap_image(heatmap: np.ndarray, size: tuple[int, int], view: View | None = None) -> np.ndarray:
    """``draw_heatmap`` as one (H, W) uint8 array."""
    return draw_heatmap(heatmap, size, view).pixels()


def draw_panel(image: Original, heatmap: np.ndarray, alpha: float, lut: np.ndarray, caption: str,
               view: View | None = None, outline: np.ndarray | None = None) -> Drawing:
    """Original | coloured heatmap | overlay, side by side at the image's size, over a caption bar.
    Parts of the image the model never saw are mid gray in the heatmap pane; ``outline`` is
    drawn on the overlay pane (see ``draw_overlay``).

    Returns:
        (H + bar, 3 W, 3) strips, where bar = max(16, H // 10) rows of white with ``caption`` in black.
    """
    picture = _picture(image)
    width, height = picture.size
    bar = max(16, height // 10)

    def strips() -> Iterator[np.ndarray]:
        for rows in _strips(height, width):
            values = upsample(heatmap, (height, width), view, rows)
            colour = _coloured(values, lut)  # upsampled and coloured once for both panes
            original = _cropped(picture, rows)
            blended = _with_outline(_blended(original, values, colour, alpha), outline, (height, width), view, rows)
            yield np.concatenate([np.asarray(original), np.asarray(colour), blended], axis=1)
        yield from caption_bar(caption, 3 * width, bar)

    return Drawing(height + bar, 3 * width, 3, strips())


def caption_bar(caption: str, width: int, height: int) -> Iterator[np.ndarray]:
    """Strips of a white bar ``width`` x ``height`` with ``caption`` in black at its left; only
    the caption's own box is drawn as a picture."""
    font = ImageFont.load_default()
    text_width = min(width, int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(caption, font=font)) + 8)
    label = Image.new("RGB", (text_width, height), (255, 255, 255))
    ImageDraw.Draw(label).text((4, (height - 11) // 2), caption, fill=(0, 0, 0), font=font)
    label_pixels = np.asarray(label)
    for rows in _strips(height, width):
        strip = np.full((rows.stop - rows.start, width, 3), 255, np.uint8)
        strip[:, :text_width] = label_pixels[rows]
        yield strip


def panel(image: Original, heatmap: np.ndarray, alpha: float, lut: np.ndarray, caption: str,
          view: View | None = None) -> np.ndarray:
    """``draw_panel`` as one (H + bar, 3 W, 3) uint8 array."""
    return draw_panel(image, heatmap, alpha, lut, caption, view).pixels()


PICTURE_KINDS = ("overlay", "heatmap", "panel")  # the image outputs of a map, as --save names them
Shrunk = Callable[[tuple[int, int]], tuple[Image.Image, View]]  # (height, width) -> the image and view at that size


def draw_kind(kind: str, image: Image.Image, view: View, heatmap: np.ndarray, alpha: float, lut: np.ndarray,
              caption: str, max_size: int | None, small: Shrunk | None = None,
              outline: np.ndarray | None = None) -> Drawing:
    """One image output of ``heatmap`` over ``image`` (the original at its output size, and the
    model's ``view`` of it): the overlay at ``image``'s size; the heatmap (grayscale) and the panel
    (image | heatmap | overlay, ``caption`` below) at most ``VIEWING_SIDE`` on their long side
    unless ``max_size`` was given. ``small`` shrinks ``image`` with its view (cached by callers
    that draw several kinds). ``outline``: a segmentation's region, outlined on the overlays."""
    size = (image.height, image.width)
    viewing = output_size(size, None if max_size else VIEWING_SIDE)
    if kind == "overlay":
        return draw_overlay(image, heatmap, alpha, lut, view, outline)
    if kind == "heatmap":
        return draw_heatmap(heatmap, viewing, view_at(view, size, viewing))
    if kind == "panel":
        picture, picture_view = (small or (lambda at: shown_at(image, view, at)))(viewing)
        return draw_panel(picture, heatmap, alpha, lut, caption, picture_view, outline)
    raise ValueError(f"not a picture kind: {kind!r} (one of {', '.join(PICTURE_KINDS)})")
