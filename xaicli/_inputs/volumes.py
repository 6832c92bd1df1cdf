"""Whole volumes for 3-D models (numpy; nibabel for files): a scan held once in RAS
voxel order with its intensities mapped over the whole volume, fitted to the model's (D, H, W)
by trilinear resampling as ``--resize`` says, and a map put back onto the scan's own voxels.

The model's depth, height and width axes are the RAS volume's i (to the subject's right), j (to
anterior) and k (to superior), in that order: what a NIfTI volume reoriented to RAS and fed as
its array is, as 3-D training pipelines read them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable

import numpy as np

from .._errors import ImageError
from .dicom import dicom_frame_count
from .discover import InputImage, is_dicom
from .geometry import RESIZE_MODES
from .intensity import Intensity, to_8bit
from .nifti import Volume, ras_spacing, read_volume
from .raster import joined_notes
from .series import read_multiframe, read_series

Span = tuple[float, float]


@dataclass(frozen=True)
class Scan:
    """A volume as the model and the pictures see it, and what puts a map back into its file's space.

    ``values``: (I, J, K) uint8 in RAS voxel order, intensities mapped over the whole volume.
    ``affine``: the file's 4x4 voxel-to-world matrix, for its stored voxel order.
    ``orientation``: the stored axes' way to RAS (a nibabel orientation, ``io_orientation(affine)``).
    ``spacing``: (3,) voxel size along i, j, k in millimetres, for drawing planes undistorted.
    """

    values: np.ndarray
    affine: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float, float]
    note: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.values.shape)


def read_scan(item: InputImage, intensity: Intensity) -> Scan:
    """A NIfTI file, a DICOM series or a multi-frame DICOM as a 3-D model's scan: its (first) volume in RAS,
    intensities mapped to 0..255 over the whole volume (``--intensity``), with what puts a map
    back into the file's space (for a series, the space its geometry gives).

    Raises:
        ImageError: the input cannot be read as a volume (one line).
    """
    if item.series:
        uid, files = item.series
        return _dicom_scan(*read_series(files, uid, intensity))
    if is_dicom(item.path):
        if item.url and dicom_frame_count(item.path) == 1:
            raise ImageError("a DICOM series on a store is not read as one volume here (only multi-frame DICOM and "
                             "NIfTI are): copy its folder to local disk (e.g. aws s3 sync) and give that folder")
        return _dicom_scan(*read_multiframe(item.path, intensity))
    return scan_of_volume(read_volume(item.path), intensity)


def scan_of_volume(volume: Volume, intensity: Intensity) -> Scan:
    """A NIfTI volume (in RAS, with its file's affine) as a scan, its intensities mapped over it whole."""
    values, how = to_8bit(volume.values, intensity)
    return Scan(values, volume.affine, volume.orientation, volume.spacing, joined_notes(volume.note, how))


def takes_volumes(size: tuple[int, ...]) -> str:
    """'this model takes volumes (32x64x64 voxels)': how a message names a 3-D model of ``size``."""
    return f"this model takes volumes ({'x'.join(map(str, size))} voxels)"


def not_a_volume(name: str, size: tuple[int, ...]) -> str:
    """Why a file called ``name`` is not a volume a 3-D model of ``size`` (D, H, W) takes, in one line."""
    suffix = PurePosixPath(name).suffix
    return (f"{takes_volumes(size)}: give NIfTI files (.nii, .nii.gz), multi-frame DICOM files or folders of "
            f"DICOM series, not {suffix or 'this file'}")


def volume_model_input(placed: PlacedScan, size: tuple[int, int, int], scaling: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(D, H, W, 1) float32: the scan fitted to the model's ``size`` as ``placed.view`` says,
    its 0..255 values through the model's pixel ``scaling``."""
    return scaling(fitted_volume(placed.scan.values, size, placed.view)[..., None]).astype(np.float32, copy=False)


def _dicom_scan(stored: np.ndarray, affine: np.ndarray, how: str) -> Scan:
    """A DICOM volume (its stored voxel order and RAS affine) as a scan in RAS voxel order."""
    from nibabel.orientations import apply_orientation, io_orientation

    orientation = io_orientation(affine)
    zooms = tuple(float(n) for n in np.linalg.norm(affine[:3, :3], axis=0))
    return Scan(np.ascontiguousarray(apply_orientation(stored, orientation)), affine, orientation,
                ras_spacing(orientation, zooms), how)


@dataclass(frozen=True)
class VolumeView:
    """How a model input was cut from a volume, axis by axis (i, j, k of the RAS volume as the
    model's D, H, W): ``seen``, the (start, stop) of the part the model saw in voxels (all of it
    unless centre-cropped); ``placed``, where that part sits along the model's axis as (start,
    stop) fractions ((0, 1) unless letterboxed)."""

    seen: tuple[Span, Span, Span]
    placed: tuple[Span, Span, Span] = ((0.0, 1.0),) * 3


@dataclass(frozen=True)
class PlacedScan:
    """A scan and how a model input was cut from it: what puts the model's map back on it."""

    scan: Scan
    view: VolumeView


def fit_volume_view(shape: tuple[int, int, int], size: tuple[int, int, int], resize: str = "stretch") -> VolumeView:
    """The geometry of fitting a volume of ``shape`` voxels into the model's ``size`` (D, H, W)
    with one of ``RESIZE_MODES``, in voxels: letterbox scales every axis by the same factor
    (the smallest that fits) and pads with 0; crop scales by the largest and keeps the centre."""
    whole = tuple((0.0, float(n)) for n in shape)
    if resize == "stretch":
        return VolumeView(whole)
    if resize == "letterbox":
        scale = min(s / n for s, n in zip(size, shape))
        inner = [max(1, round(n * scale)) for n in shape]
        offsets = [(s - i) // 2 for s, i in zip(size, inner)]
        return VolumeView(whole, tuple((o / s, (o + i) / s) for o, i, s in zip(offsets, inner, size)))
    if resize == "crop":
        scale = max(s / n for s, n in zip(size, shape))
        seen = [min(float(n), s / scale) for n, s in zip(shape, size)]
        return VolumeView(tuple(((n - length) / 2, (n + length) / 2) for n, length in zip(shape, seen)))
    raise ValueError(f"unknown resize mode {resize!r}; choose from {', '.join(RESIZE_MODES)}")


def fitted_volume(values: np.ndarray, size: tuple[int, int, int], view: VolumeView) -> np.ndarray:
    """(D, H, W) float32: ``values`` (I, J, K) resampled trilinearly (voxel centres aligned, as
    ``tf.image.resize`` without antialiasing) into the model's ``size`` as ``view`` says;
    letterbox padding is 0."""
    result = values
    for axis, (count, seen, placed) in enumerate(zip(size, view.seen, view.placed)):
        fraction = (np.arange(count) + 0.5) / count
        inside = (fraction >= placed[0]) & (fraction < placed[1])
        position = seen[0] + (fraction - placed[0]) / (placed[1] - placed[0]) * (seen[1] - seen[0])
        result = _interpolated(result, axis, position - 0.5, inside, 0.0)
    return result


def scan_map(heatmap: np.ndarray, view: VolumeView, shape: tuple[int, int, int]) -> np.ndarray:
    """(I, J, K) float32: a model-space map (d, h, w) covering the whole model input, put back
    onto a scan of ``shape`` voxels (RAS order) trilinearly; 0 where the model did not see the
    scan (outside a centre crop), which every viewer shows as no map."""
    result = heatmap.astype(np.float32)
    for axis, (count, seen, placed) in enumerate(zip(shape, view.seen, view.placed)):
        centre = np.arange(count) + 0.5
        inside = (centre >= seen[0]) & (centre < seen[1])
        fraction = placed[0] + (centre - seen[0]) / (seen[1] - seen[0]) * (placed[1] - placed[0])
        result = _interpolated(result, axis, fraction * heatmap.shape[axis] - 0.5, inside, 0.0)
    return result


SLAB_VALUES = 1 << 22  # values resampled at a time: a large scan's float copies stay at a few tens of MB


def _interpolated(values: np.ndarray, axis: int, coordinates: np.ndarray, inside: np.ndarray,
                  fill: float) -> np.ndarray:
    """``values`` read along ``axis`` at fractional indices ``coordinates`` (linear between the
    two nearest, the ends held), ``fill`` where not ``inside``: one pass of separable resampling,
    float32, done in slabs along another axis when the result is large."""
    result_size = values.size // values.shape[axis] * len(coordinates)
    if axis == 0 or max(values.size, result_size) <= SLAB_VALUES:
        return _interpolated_whole(values, axis, coordinates, inside, fill)
    result = np.empty((*values.shape[:axis], len(coordinates), *values.shape[axis + 1:]), np.float32)
    step = max(1, len(values) * SLAB_VALUES // max(values.size, result_size))
    for start in range(0, len(values), step):
        result[start:start + step] = _interpolated_whole(values[start:start + step], axis, coordinates, inside, fill)
    return result


def _interpolated_whole(values: np.ndarray, axis: int, coordinates: np.ndarray, inside: np.ndarray,
                        fill: float) -> np.ndarray:
    count = values.shape[axis]
    low = np.floor(coordinates).astype(np.int64)
    weight = (coordinates - low).astype(np.float32)
    below, above = np.clip(low, 0, count - 1), np.clip(low + 1, 0, count - 1)
    shape = [1] * values.ndim
    shape[axis] = len(coordinates)
    weight = weight.reshape(shape)
    result = np.take(values, below, axis=axis) * (1 - weight) + np.take(values, above, axis=axis) * weight
    return np.where(inside.reshape(shape), result, np.float32(fill)).astype(np.float32)


def in_stored_order(values: np.ndarray, scan: Scan) -> np.ndarray:
    """A RAS-ordered array of the scan's shape back in the voxel order the scan's file stores,
    so that the file's own affine places it (a view: axes swapped and flipped, nothing copied)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    return apply_orientation(values, ornt_transform(axcodes2ornt("RAS"), scan.orientation))
