"""A segmentation's region from outside the model (``--region truth``, ``--region box:...``):
parsed, checked and put on the output grid of each image (numpy and Pillow only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from .._errors import ImageError, UsageError
from .._evaluation.truth import MaskError
from .._explain.targets import REGION_SOURCES
from .._inputs.geometry import box_region, fit_view, sampled_labels
from .._inputs.intensity import parse_intensity
from .._inputs.raster import open_image

if TYPE_CHECKING:
    from .._evaluation.truth import GroundTruth
    from .._inputs.discover import InputImage
    from .._models.info import ModelInfo

Box = tuple[float, float, float, float]


def parse_region(text: str) -> Box | None:
    """``--region``: 'predicted' or 'truth' (None), or 'box:x0,y0,x1,y1' in original pixels.

    Raises:
        UsageError: anything else, or a box with no area or a negative corner.
    """
    if text in ("predicted", "truth"):
        return None
    if not text.startswith("box:"):
        raise UsageError(f"unknown --region {text!r}; choose from {', '.join(REGION_SOURCES)}")
    try:
        x0, y0, x1, y1 = (float(number) for number in text.removeprefix("box:").split(","))
    except ValueError:
        raise UsageError(f"--region {text}: give a box as box:X0,Y0,X1,Y1 in original pixels, e.g. "
                         "box:10,20,110,90") from None
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise UsageError(f"--region {text}: a box needs 0 <= X0 < X1 and 0 <= Y0 < Y1 (original pixels, the "
                         "far edges excluded)")
    return x0, y0, x1, y1


def check_box_fits(box: Box, size: tuple[int, int], region: str) -> None:
    """``box`` lies inside an image of ``size`` (height, width).

    Raises:
        ImageError: it does not, in one line that says the image's size.
    """
    height, width = size
    if box[2] > width or box[3] > height:
        raise ImageError(f"--region {region} reaches beyond the image's {width}x{height} pixels; give a box "
                         "inside every image")


def check_box_on_first_image(region: str, items: Iterable[InputImage], max_pixels: int, intensity: str) -> None:
    """A ``--region`` box checked against the first input image before the model runs, the
    usual mistake (a box for images of another size) caught at once; later images of another
    size get an error row each.

    Raises:
        UsageError: the box reaches beyond the first image.
    """
    box = parse_region(region)
    first = next((item for item in items if not item.error and item.part is None), None)
    if box is None or first is None:
        return
    try:
        picture, _ = open_image(first.path, max_pixels, parse_intensity(intensity))
    except ImageError:
        return  # its row says why
    try:
        check_box_fits(box, (picture.height, picture.width), region)
    except ImageError as exc:
        raise UsageError(f"{first.name}: {exc}") from None


def given_region(region: str, info: ModelInfo, ground: GroundTruth | None, item: InputImage,
                 image_size: tuple[int, int], resize: str) -> np.ndarray | None:
    """The region ``--region`` gives an image of ``image_size`` (height, width) on the model's
    output grid: a box's (gh, gw) float32 cells, a truth mask's (gh, gw) int64 class per cell
    (-1 in letterbox padding); None for 'predicted' (the model's own mask).

    Raises:
        ImageError: a box outside the image, a missing or unreadable mask, a class the model lacks.
    """
    box = parse_region(region)
    if region == "predicted":
        return None
    view = fit_view(image_size, info.input_size, resize)
    if box is not None:
        check_box_fits(box, image_size, region)
        return box_region(view, info.output_grid, box)
    if ground is None:
        raise ImageError("--region truth needs --truth-masks")
    labels = ground.label_map(item)
    if _one_channel(info):
        labels = (labels > 0).astype(np.int64)  # a binary mask may store its object as 255
    largest = int(labels.max(initial=0))
    if largest >= info.num_classes:
        raise MaskError(f"the truth mask has class {largest} but the model has {info.num_classes} classes "
                        f"(0..{info.num_classes - 1}); give masks whose pixel values are the model's classes")
    return sampled_labels(labels, view, image_size, info.output_grid)


def object_label(info: ModelInfo, explained_class: int) -> int | None:
    """The value of a segmentation's ``explained_class`` in a truth mask, its object for pointing,
    energy and IoU: the class itself, or None (every non-zero pixel) for the foreground of a
    one-channel model, whose masks may store it as 255; None for other kinds (the mask's object)."""
    if info.kind != "segmentation" or (_one_channel(info) and explained_class == 1):
        return None
    return explained_class


def _one_channel(info: ModelInfo) -> bool:
    """A segmentation of one sigmoid channel: background and foreground."""
    return info.units == 1
