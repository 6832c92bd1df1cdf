"""The geometry between an image and the model input: resize modes, the ``View`` that maps a
map back over its image, output sizes, and the model input itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .scaling import Scaling


RESIZE_MODES = {
    "stretch": "resize to the model's size, ignoring the aspect ratio",
    "letterbox": "keep the aspect ratio, pad the short side with black",
    "crop": "keep the aspect ratio, cut the long side to the centre",
}


@dataclass(frozen=True)
class View:
    """How a model input was cut from its image, so a map can be put back where it belongs.

    ``seen``: (left, top, right, bottom) of the part of the original image the model saw, in
    original pixels (the whole image unless it was centre-cropped).
    ``placed``: where that part sits inside the model input, as (left, top, right, bottom)
    fractions of its width and height ((0, 0, 1, 1) unless it was letterboxed).
    """

    seen: tuple[float, float, float, float]
    placed: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @staticmethod
    def whole(height: int, width: int) -> "View":
        """The view of a stretched image: all of it, filling the model input."""
        return View((0.0, 0.0, float(width), float(height)))


# Panels and heatmaps are for looking at: without --max-size, their long side (a panel's, each of
# its three panes') is at most this. A panel of three such panes is 3840 px wide, a 4K screen's
# width, and a heatmap holds nothing finer than the model's input. Overlays stay at full size.
VIEWING_SIDE = 1280


def output_size(image_size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """(height, width) at which an image's outputs are drawn: its own size, or with its long
    side brought down to ``max_size`` and its aspect ratio kept."""
    height, width = image_size
    if max_size is None or max(height, width) <= max_size:
        return image_size
    scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def shown_at(picture: Image.Image, view: View, size: tuple[int, int]) -> tuple[Image.Image, View]:
    """The picture and its view at the output ``size`` (height, width): the same geometry, the
    seen part's corners scaled with the picture. Unchanged when the size is the picture's own."""
    width, height = picture.size
    if (height, width) == size:
        return picture, view
    # BOX reduction by whole factors first, then bilinear: fast and without aliasing.
    resized = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return resized, view_at(view, (height, width), size)


def view_at(view: View, image_size: tuple[int, int], size: tuple[int, int]) -> View:
    """``view`` of an image of ``image_size`` (height, width), for the same image drawn at
    ``size``: the seen part's corners scaled with it."""
    y_scale, x_scale = size[0] / image_size[0], size[1] / image_size[1]
    left, top, right, bottom = view.seen
    return View((left * x_scale, top * y_scale, right * x_scale, bottom * y_scale), view.placed)


def fit_view(image_size: tuple[int, int], size: tuple[int, int], resize: str = "stretch") -> View:
    """The geometry of fitting an image of ``image_size`` (height, width) into the model's
    ``size`` (height, width) with one of ``RESIZE_MODES``."""
    height, width = image_size
    target_height, target_width = size
    if resize == "stretch":
        return View.whole(height, width)
    if resize == "letterbox":
        left, top, inner_width, inner_height = _letterbox_box(image_size, size)
        return View((0.0, 0.0, float(width), float(height)),
                    (left / target_width, top / target_height,
                     (left + inner_width) / target_width, (top + inner_height) / target_height))
    if resize == "crop":
        aspect = target_width / target_height
        seen_width, seen_height = min(width, height * aspect), min(height, width / aspect)
        left, top = (width - seen_width) / 2, (height - seen_height) / 2
        return View((left, top, left + seen_width, top + seen_height))
    raise ValueError(f"unknown resize mode {resize!r}")


def grid_points(view: View, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where each cell of an output grid over the model input lies in the original image: the
    (x, y) of its centre in original pixels, each (gh, gw) float64; NaN for a cell in letterbox
    padding. ``view`` is of the image at its original size; ``grid`` is (gh, gw)."""
    rows, columns = grid
    left, top, right, bottom = view.placed
    seen_left, seen_top, seen_right, seen_bottom = view.seen
    across = ((np.arange(columns) + 0.5) / columns - left) / (right - left)
    down = ((np.arange(rows) + 0.5) / rows - top) / (bottom - top)
    across = np.where((across >= 0) & (across < 1), across, np.nan)
    down = np.where((down >= 0) & (down < 1), down, np.nan)
    x = seen_left + across * (seen_right - seen_left)
    y = seen_top + down * (seen_bottom - seen_top)
    return np.broadcast_to(x, grid), np.broadcast_to(y[:, None], grid)


def box_region(view: View, grid: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """(gh, gw) float32 in {0, 1}: the cells of an output grid whose centres fall in ``box``
    (x0, y0, x1, y1 in original pixels, the far edges excluded); a box smaller than a cell
    takes the cell under its centre."""
    x, y = grid_points(view, grid)
    x0, y0, x1, y1 = box
    with np.errstate(invalid="ignore"):
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        if not inside.any():
            distance = (x - (x0 + x1) / 2) ** 2 + (y - (y0 + y1) / 2) ** 2
            inside = np.zeros(grid, bool)
            if np.isfinite(distance).any():
                inside[np.unravel_index(np.nanargmin(distance), grid)] = True
    return inside.astype(np.float32)


def sampled_labels(labels: np.ndarray, view: View, image_size: tuple[int, int],
                   grid: tuple[int, int]) -> np.ndarray:
    """(gh, gw) int64: the label map ``labels`` (any (h, w) size, stretched over an image of
    ``image_size`` (height, width)) read at each output-grid cell's centre (nearest); -1 for a
    cell in letterbox padding."""
    x, y = grid_points(view, grid)
    finite = np.isfinite(x) & np.isfinite(y)
    rows = np.clip((np.nan_to_num(y) * labels.shape[0] / image_size[0]).astype(np.int64), 0, labels.shape[0] - 1)
    columns = np.clip((np.nan_to_num(x) * labels.shape[1] / image_size[1]).astype(np.int64), 0, labels.shape[1] - 1)
    return np.where(finite, labels[rows, columns].astype(np.int64), -1)


def _letterbox_box(image_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, width, height) in model-input pixels of the image scaled to fit inside
    ``size`` with its aspect ratio kept, centred."""
    scale = min(size[0] / image_size[0], size[1] / image_size[1])
    width, height = max(1, round(image_size[1] * scale)), max(1, round(image_size[0] * scale))
    return (size[1] - width) // 2, (size[0] - height) // 2, width, height


def to_model_input(
    image: np.ndarray | Image.Image, size: tuple[int, int], channels: int, scaling: Scaling, resize: str = "stretch"
) -> np.ndarray:
    """Resize (bilinear, as ``resize`` of ``RESIZE_MODES`` says) and preprocess one image.

    Args:
        image: (H, W, 3) uint8 RGB, or the RGB picture ``open_image`` gives.
        size: model (height, width).
        channels: 1 (converted to luma) or 3.
        scaling: a value of ``PRESETS`` or ``custom_scaling(...)``, applied to 0..255 pixels
            (letterbox padding is black, pixel 0, before scaling).
        resize: stretch, letterbox or crop; ``fit_view`` gives the matching geometry.

    Returns:
        (height, width, channels) float32.
    """
    height, width = size
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image_size = (pil.height, pil.width)
    if channels == 1:
        pil = pil.convert("L")
    if resize == "letterbox":
        left, top, inner_width, inner_height = _letterbox_box(image_size, size)
        resized = Image.new(pil.mode, (width, height), 0)
        resized.paste(pil.resize((inner_width, inner_height), Image.Resampling.BILINEAR), (left, top))
    else:
        box = fit_view(image_size, size, resize).seen
        resized = pil.resize((width, height), Image.Resampling.BILINEAR, box=box)
    pixels = np.asarray(resized, dtype=np.float32)
    if channels == 1:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(scaling(pixels), dtype=np.float32)


def drawn_picture(picture: Image.Image, input_size: tuple[int, int], resize: str,
                  max_size: int | None) -> tuple[Image.Image, View]:
    """The original at the size its outputs are drawn at (long side at most ``max_size``; the
    original's own when None), and the view of it the model had: the model saw the original at
    its full size, fitted to ``input_size`` (height, width) as ``resize`` says."""
    size = (picture.height, picture.width)
    view = fit_view(size, input_size, resize)
    return shown_at(picture, view, output_size(size, max_size))
