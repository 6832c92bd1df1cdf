"""Drawing and writing an image's files in the writer threads (the local engine's last stage): every
--save kind of every method and target, the page's thumbnail, the mosaic tile, and the figures
against the object."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .._budget import render_estimate
from .._errors import ImageError
from .._evaluation.faithfulness import energy_in, iou, pointing_hit
from .._inputs.geometry import View, drawn_picture, output_size, shown_at
from .._inputs.volumes import PlacedScan, scan_map
from .._outputs.mosaic import tile_size
from .._outputs.render import Shrunk, draw_kind, overlay, upsample
from .._outputs.report import thumbnail_size
from .._outputs.scans import axial_mosaic, nifti_chunks, ortho_picture, thumbnail_of
from .._outputs.writers import write_bytes, write_image, write_npy
from .._runs.config import ExplainOptions
from .._runs.decisions import Prepared
from .decoded import Decoded, Workers, opened_picture
THUMBNAIL = "thumbnail"  # the report page's small overlay, written beside the --save kinds


@dataclass(frozen=True)
class Outcome:
    """One write of an image's render: None or the error that kept it from being written, and
    the slice's mosaic tile when its file gets a mosaic."""

    error: Exception | None
    tile: np.ndarray | None = None
    figures: Figures = field(default_factory=dict)  # pointing, energy, iou against the object


Figures = dict[str, "float | bool"]  # metric name -> value, for one image, method and explained class


@dataclass(frozen=True)
class Job:
    """The files of one image for one method and explained class."""

    heatmap: np.ndarray  # the method's map at its own resolution
    paths: dict[str, Path]  # --save kind -> file
    caption: str  # the panel's caption
    tiles: int  # tiles in the mosaic of the image's file; 0 when it gets none
    outline: np.ndarray | None = None  # a segmentation's region on the output grid, outlined on the overlays
    object_label: int | None = None  # a segmentation's class: the object is the truth mask's pixels of it


def render_image(prepared: Prepared, decoded: Decoded, jobs: list[Job], workers: Workers) -> list[Outcome]:
    """Draw and write every file of one image, within the memory budget; the original is read
    again when it was not kept. Returns, per job, the outcome: None or the error that kept it
    from being written (a file system error, or the image no longer readable), and its mosaic
    tile when it has one."""
    if decoded.scan is not None:
        return _rendered_volume(prepared, decoded, jobs, workers)
    height, width = decoded.shown_size
    estimate = render_estimate((height, width), prepared.config.save, prepared.config.image_format,
                               decoded.decode_bytes if decoded.image is None else 0)
    try:
        with workers.budget.working(estimate):
            image, view = decoded.image, decoded.view
            if image is None:
                image, view = drawn_picture(opened_picture(prepared, decoded.item, workers.stacks)[0],
                                            prepared.info.input_size, prepared.config.resize, prepared.config.max_size)
            # The small copies for the thumbnail, the mosaic tile and the figures against the
            # object, made once for every method.
            small = functools.cache(lambda size: shown_at(image, view, size))
            measure = _object_measure(prepared, decoded, small)
            return [_written(prepared, image, view, job, small, measure) for job in jobs]
    except ImageError as exc:  # changed or removed since it was read
        return [Outcome(exc)] * len(jobs)
    finally:
        workers.budget.release(decoded.kept)


SCAN_RENDER_BYTES_PER_VOXEL = 8  # the map over the scan (float32) and its gzipped NIfTI, compressed plane by plane


def _rendered_volume(prepared: Prepared, decoded: Decoded, jobs: list[Job], workers: Workers) -> list[Outcome]:
    """Write a 3-D model's files of one volume (``write_volume_files``) for each job, within the
    memory budget; the scan held since decoding is given back after."""
    placed = decoded.scan
    try:
        with workers.budget.working(math.prod(placed.scan.shape) * SCAN_RENDER_BYTES_PER_VOXEL):
            outcomes = []
            for job in jobs:
                try:
                    write_volume_files(prepared, placed, job)
                    outcomes.append(Outcome(None))
                except OSError as exc:
                    outcomes.append(Outcome(exc))
            return outcomes
    finally:
        workers.budget.release(decoded.kept)


def write_volume_files(prepared: Prepared, placed: PlacedScan, job: Job) -> None:
    """One map's files over its scan, as ``job.paths`` names them (``naming.VOLUME_KINDS``):
    the map resampled onto the scan's voxels and written as NIfTI in the file's own space, the
    planes through its peak, the axial mosaic, the model-space map and the page's thumbnail."""
    config, scan = prepared.config, placed.scan
    values = scan_map(job.heatmap, placed.view, scan.shape)
    ortho = functools.cache(lambda: ortho_picture(scan, values, config.alpha, prepared.lut, job.caption))
    for kind, path in job.paths.items():
        if kind == "scan":
            write_bytes(path, nifti_chunks(values, scan))
        elif kind == "raw":
            write_npy(path, job.heatmap)
        elif kind == "ortho":
            write_image(path, ortho(), config.image_format)
        elif kind == "mosaic":
            write_image(path, axial_mosaic(scan, values, config.alpha, prepared.lut), config.image_format)
        elif kind == THUMBNAIL:
            write_image(path, thumbnail_of(ortho(), thumbnail_size(ortho().shape[:2])), "jpeg")
        put_on_store(config, path, kind)


def _written(prepared: Prepared, image: Image.Image, view: View, job: Job, small: Shrunk,
             measure: Callable[[np.ndarray, int | None], Figures]) -> Outcome:
    try:
        _render(image, view, job, prepared, small)
    except OSError as exc:
        return Outcome(exc)
    tile = (_small_overlay(small(tile_size((image.height, image.width), job.tiles)), job, prepared)
            if job.tiles else None)
    return Outcome(None, tile, measure(job.heatmap, job.object_label))


MEASURE_LONG_SIDE = 1024  # maps are compared with objects at most this large: the figures barely move


def _object_measure(prepared: Prepared, decoded: Decoded, small: Shrunk) -> Callable[[np.ndarray, int | None], Figures]:
    """A function of a map (and, for a segmentation, its class's value in the label map) giving
    pointing, energy and IoU against the image's object (--truth-masks or --truth-boxes), on the
    map and mask at no more than ``MEASURE_LONG_SIDE`` pixels; {} without ground truth."""
    ground = prepared.ground
    if ground is None:
        return lambda heatmap, label: {}
    shown = decoded.shown_size
    size = output_size(shown, MEASURE_LONG_SIDE)
    masks = functools.cache(lambda label: ground.mask(decoded.item, decoded.original_size, size, label))
    view = small(size)[1]
    tolerance = prepared.config.pointing_tolerance * size[1] / decoded.original_size[1]

    def measure(heatmap: np.ndarray, label: int | None) -> Figures:
        mask = masks(label)
        if mask is None:
            return {}
        saliency = upsample(heatmap, size, view)
        return {"pointing": pointing_hit(saliency, mask, tolerance), "energy": round(energy_in(saliency, mask), 6),
                "iou": round(iou(saliency, mask), 6)}

    return measure


def _render(image: Image.Image, view: View, job: Job, prepared: Prepared, small: Shrunk) -> None:
    """Write ``image``'s files of one map (see ``draw_kind``), its raw values and thumbnail."""
    config = prepared.config
    for kind, path in job.paths.items():
        if kind == "raw":
            write_npy(path, job.heatmap)
        elif kind == THUMBNAIL:
            write_image(path, _small_overlay(small(thumbnail_size((image.height, image.width))), job, prepared),
                        "jpeg")
        else:
            write_image(path, draw_kind(kind, image, view, job.heatmap, config.alpha, prepared.lut, job.caption,
                                        config.max_size, small, job.outline), config.image_format)
        put_on_store(config, path, kind)


def put_on_store(config: ExplainOptions, path: Path, kind: str = "") -> None:
    """An output folder on a store gets the file just written whole, in one put, from the spool;
    a local folder has it already. Before the image's row, so the table never names an object
    that is not there. The spool keeps only thumbnails (a few KB each), which the page is made
    from at the end without fetching them back."""
    if config.store is not None:
        config.store.put(path, keep=kind == THUMBNAIL)


def _small_overlay(shrunk: tuple[Image.Image, View], job: Job, prepared: Prepared) -> np.ndarray:
    picture, view = shrunk
    return overlay(picture, job.heatmap, prepared.config.alpha, prepared.lut, view, job.outline)
