"""Decoding ahead of the model (the local engine's first stage): each image read, fitted to the model
input and kept at its output size within the memory budget, or passed by when --skip-existing or
--resume finds its outputs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .._budget import MemoryBudget
from .._errors import ImageError
from .._inputs.dicom import dicom_pixel_count
from .._inputs.discover import InputImage, is_dicom
from .._inputs.geometry import View, drawn_picture, to_model_input
from .._inputs.raster import PICTURE_BYTES_PER_PIXEL, decode_bytes, open_image
from .._inputs.nifti import is_nifti_name
from .._inputs.remote import materialize
from .._inputs.stacks import StackCache, load_bytes
from .._inputs.volumes import PlacedScan, fit_volume_view, not_a_volume, read_scan, volume_model_input
from .._outputs.naming import planned_outputs, recorded_outputs
from .._outputs.table import table_text
from .._runs.decisions import Prepared
from .._runs.regions import given_region


@dataclass(frozen=True)
class Workers:
    """Where rendering happens, the memory it shares with decoding, and the volumes whose
    slices are under way."""

    pool: ThreadPoolExecutor
    budget: MemoryBudget
    stacks: StackCache


@dataclass(frozen=True)
class Decoded:
    """One image read for its batch: its model input and original, or why it needs no explaining
    (an error, outputs already there, the resumed run's rows)."""

    item: InputImage
    image: Image.Image | None  # the RGB original at the output size; None when not kept (read again)
    model_input: np.ndarray | None  # (h, w, c) float32
    view: View | None = None  # how model_input was cut from image, at the output size
    kept: int = 0  # bytes of ``image`` the memory budget accounts
    shown_size: tuple[int, int] = (0, 0)  # (height, width) the outputs are drawn at
    original_size: tuple[int, int] = (0, 0)  # (height, width) of the image as read
    decode_bytes: int = 0  # what reading the original again holds at its peak
    error: str = ""
    skipped: bool = False  # --skip-existing and every output is already there
    carried: tuple[dict[str, object], ...] = ()  # --resume: the earlier run's rows, outputs all there
    note: str = ""  # what the user should know about how the image was read
    given: np.ndarray | None = None  # a segmentation's region from --region truth or box, on the output grid
    scan: PlacedScan | None = None  # a 3-D model's volume, and how its model input was cut from it


def passable(prepared: Prepared, items: Iterable[InputImage],
              carried: dict[str, list[dict[str, object]]]) -> Iterator[tuple[InputImage, bool]]:
    """Each item, and whether ``--skip-existing`` or ``--resume`` may pass it by. The parts of a
    volume are passed by together or not at all, since its mosaic shows every slice: when some
    part is missing, the earlier rows of the others are dropped and the whole file is explained."""
    config = prepared.config
    for group in _by_file(items):
        if config.existing not in ("skip", "resume") or group[0].part is None:
            yield from ((item, True) for item in group)
            continue
        whole = all(outputs_there(prepared, part, carried.get(table_text(part.name), ()))
                    and (config.existing == "skip" or table_text(part.name) in carried) for part in group)
        for part in group:
            if not whole:
                carried.pop(table_text(part.name), None)
            yield part, whole


def outputs_there(prepared: Prepared, item: InputImage, earlier: Sequence[dict[str, object]]) -> bool:
    """Whether the files of ``item`` are all there: those the run plans, or, when the classes
    explained depend on the prediction, those its ``earlier`` rows name (``--resume``)."""
    if prepared.dynamic_targets:
        return bool(earlier) and all(map(prepared.output_exists, recorded_outputs(prepared.config, earlier)))
    return all(map(prepared.output_exists, planned_outputs(prepared.config, item, prepared.output_tags)))


def _by_file(items: Iterable[InputImage]) -> Iterator[list[InputImage]]:
    """``items`` in lists: the parts of one file together, any other item alone."""
    group: list[InputImage] = []
    for item in items:
        if group and not (item.part and item.path == group[0].path):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def decode(prepared: Prepared, item: InputImage, may_pass: bool, carried: dict[str, list[dict[str, object]]],
           workers: Workers) -> Decoded:
    """Read ``item`` within the memory budget and fit it to the model input, unless ``may_pass``
    and its outputs are all there (``--skip-existing``, or ``--resume`` with its earlier rows)."""
    info = prepared.info
    if item.error:
        return Decoded(item, None, None, error=item.error)
    earlier = carried.get(table_text(item.name), ()) if may_pass else ()
    if earlier or (prepared.config.existing == "skip" and may_pass):
        if outputs_there(prepared, item, earlier):
            return Decoded(item, None, None, skipped=not earlier, carried=tuple(earlier))
    try:
        materialize(item)
    except ImageError as exc:
        return Decoded(item, None, None, error=str(exc))
    if info.takes_volumes:
        return _decoded_volume(prepared, item, workers.budget)
    decoding = _decode_bytes(item)
    with workers.budget.working(decoding):
        try:
            picture, note = opened_picture(prepared, item, workers.stacks)
            model_input = to_model_input(picture, info.input_size, info.channels, prepared.scaling,
                                         prepared.config.resize)
            given = given_region(prepared.config.region, info, prepared.ground, item, (picture.height, picture.width),
                                 prepared.config.resize) if info.kind == "segmentation" else None
        except ImageError as exc:
            return Decoded(item, None, None, error=str(exc))
        shown, view = drawn_picture(picture, info.input_size, prepared.config.resize, prepared.config.max_size)
        original_size = (picture.height, picture.width)
        del picture  # the full-size original, when the outputs are drawn smaller
    # The original is kept for rendering only while it fits the budget; otherwise it is read again.
    size = shown.width * shown.height * PICTURE_BYTES_PER_PIXEL
    kept = size if workers.budget.try_keep(size) else 0
    return Decoded(item, shown if kept else None, model_input, view, note=note, kept=kept,
                    shown_size=(shown.height, shown.width), original_size=original_size, decode_bytes=decoding,
                    given=given)


def _decoded_volume(prepared: Prepared, item: InputImage, budget: MemoryBudget) -> Decoded:
    """A 3-D model's input: a NIfTI volume or a DICOM series read once (RAS, intensities mapped
    over the whole volume) and resampled to the model's (D, H, W); the scan is held in the
    budget until its files are written."""
    config, info = prepared.config, prepared.info
    if not (item.series or is_nifti_name(item.path.name) or is_dicom(item.path)):
        return Decoded(item, None, None, error=not_a_volume(item.path.name, info.input_size))
    try:
        with budget.working(_volume_bytes(item)):
            scan = read_scan(item, prepared.intensity)
            placed = PlacedScan(scan, fit_volume_view(scan.shape, info.input_size, config.resize))
            inputs = volume_model_input(placed, info.input_size, prepared.scaling)
    except ImageError as exc:
        return Decoded(item, None, None, error=str(exc))
    budget.hold(scan.values.nbytes)
    return Decoded(item, None, inputs, note=scan.note, kept=scan.values.nbytes, scan=placed)


SERIES_BYTES_PER_VOXEL = 4 + 1 + 1 + 1  # float32 values, their 8 bits, transposed, turned to RAS
MULTIFRAME_BYTES_PER_VOXEL = 2 + 8 + 8 + 1 + 1 + 1  # stored pixels, float64 values, reordered, 8 bits (x3)


def _volume_bytes(item: InputImage) -> int:
    """What reading a volume holds at its peak: as a NIfTI stack's (``load_bytes``), or a
    DICOM volume's, its slices read one by one (a series) or all at once (a multi-frame file)."""
    if item.series:
        files = item.series[1]
        return dicom_pixel_count(files[0]) * len(files) * SERIES_BYTES_PER_VOXEL
    if is_dicom(item.path):
        return dicom_pixel_count(item.path) * MULTIFRAME_BYTES_PER_VOXEL
    return load_bytes(item.path)


def opened_picture(prepared: Prepared, item: InputImage, stacks: StackCache) -> tuple[Image.Image, str]:
    """The item's RGB picture and note: a file's own, or a part's from its file's stack."""
    if item.part:
        return stacks.picture(item)
    return open_image(item.path, prepared.config.max_pixels, prepared.intensity)


def _decode_bytes(item: InputImage) -> int:
    """What opening the item holds at its peak: a part is a slice of a stack in memory."""
    return 0 if item.part else decode_bytes(item.path)
