"""DICOM series as volumes for 3-D models (pydicom and numpy): the single-frame files of a folder that
share a SeriesInstanceUID are one volume, its slices ordered by their position along the slice
normal, its voxel-to-world affine computed from the geometry the files carry.

DICOM places voxels in LPS (x to the patient's left, y to posterior, z to superior);
NIfTI's world is RAS, so x and y change sign."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .._errors import ImageError
from .dicom import DicomPixels, read_dicom, to_pictures
from .discover import InputImage, is_dicom
from .intensity import Intensity

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-4  # direction cosines that differ by less are the same orientation
SPACING_TOLERANCE = 0.01  # slice gaps may differ from the series' by this fraction (rounding in IPP)


@dataclass(frozen=True)
class SliceGeometry:
    """Where one single-frame file's slice lies: ImagePositionPatient (mm, LPS),
    ImageOrientationPatient (row then column direction cosines), PixelSpacing (between rows, between
    columns, mm) and the frame's (rows, columns)."""

    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


def series_key(path: Path) -> str | None:
    """The SeriesInstanceUID of a single-frame DICOM file that carries a slice's geometry (read
    from its header); None for any other file, which is explained on its own."""
    try:
        import pydicom

        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        if int(dataset.get("NumberOfFrames", 1) or 1) != 1 or not _has_geometry(dataset):
            return None
        return str(dataset.SeriesInstanceUID)
    except Exception:  # noqa: BLE001 (read on its own, its row says why)
        return None


def _has_geometry(dataset) -> bool:
    return all(keyword in dataset for keyword in ("SeriesInstanceUID", "ImagePositionPatient",
                                                  "ImageOrientationPatient", "PixelSpacing"))


def grouped_series(items: Iterable[InputImage]) -> Iterator[InputImage]:
    """``items`` with each folder's single-frame DICOM files of one series replaced by one item
    for the series (``InputImage.series``), in the place of its first file; several series in a
    folder are several items. A folder's series are given once the sorted walk has left the
    folder (its subfolders' files come between its own)."""
    pending: OrderedDict[Path, OrderedDict[str, list[InputImage]]] = OrderedDict()
    for item in items:
        yield from _finished(pending, item.path)
        key = series_key(item.path) if not item.error and is_dicom(item.path) else None
        if key is None:
            yield item
        else:
            pending.setdefault(item.path.parent, OrderedDict()).setdefault(key, []).append(item)
    yield from _finished(pending, None)


def _finished(pending: OrderedDict[Path, OrderedDict[str, list[InputImage]]], path: Path | None) -> Iterator[InputImage]:
    """The series of every pending folder that ``path`` is not inside (all of them for None)."""
    for folder in list(pending):
        if path is not None and folder in path.parents:
            continue
        for uid, files in pending.pop(folder).items():
            first = files[0]
            yield replace(first, path=folder, relative=first.relative.parent / uid,
                          series=(uid, tuple(item.path for item in files)))


def read_series(files: Iterable[Path], uid: str, intensity: Intensity) -> tuple[np.ndarray, np.ndarray, str]:
    """A series' slices as one volume in 8 bits, in the files' own voxel order.

    Returns:
        (columns, rows, slices) uint8 (``values[i, j, k]`` is pixel (row j, column i) of the k-th
        slice along the normal), the 4x4 RAS voxel-to-world affine, and how the intensities were
        mapped (over the whole series: ``--intensity``, or the first file's window for auto).

    Raises:
        ImageError: one line: a slice missing, uneven spacing, two orientations or sizes, a
            file that cannot be read.
    """
    import pydicom

    read = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            geometry = SliceGeometry(tuple(float(v) for v in dataset.ImagePositionPatient),
                                     tuple(float(v) for v in dataset.ImageOrientationPatient),
                                     tuple(float(v) for v in dataset.PixelSpacing),
                                     (int(dataset.Rows), int(dataset.Columns)))
        except Exception as exc:  # noqa: BLE001 (pydicom raises assorted types on bad headers)
            raise ImageError(f"{path.name} of series {uid}: cannot read its geometry ({exc})") from None
        read.append((geometry, path))
    geometries, order, spacing = _ordered(read, uid)
    slices = []
    for index in order:
        try:
            slices.append(read_dicom(read[index][1]))
        except ImageError as exc:
            raise ImageError(f"{read[index][1].name} of series {uid}: {exc}") from None
    if any(pixels.colour for pixels in slices):
        raise ImageError(f"series {uid} holds colour images; a 3-D model takes grayscale volumes")
    stacked = DicomPixels(np.concatenate([pixels.frames for pixels in slices]), slices[0].window,
                          slices[0].inverted, all(pixels.shallow for pixels in slices))
    pictures, mapped = to_pictures(stacked, intensity)
    return np.ascontiguousarray(np.transpose(pictures, (2, 1, 0))), _affine(geometries[order[0]], spacing), mapped


def _ordered(read: list[tuple[SliceGeometry, Path]], uid: str) -> tuple[list[SliceGeometry], list[int], float]:
    """The slices' geometries, their order along the normal and the slice spacing, checked."""
    geometries = [geometry for geometry, _ in read]
    first = geometries[0]
    for geometry, path in read:
        if np.abs(np.subtract(geometry.orientation, first.orientation)).max() > ORIENTATION_TOLERANCE:
            raise ImageError(f"series {uid} has two orientations ({_cosines(first)} and {_cosines(geometry)}, "
                             f"{path.name}); export each orientation as its own series")
        if geometry.size != first.size or not np.allclose(geometry.pixel_spacing, first.pixel_spacing):
            raise ImageError(f"series {uid} has slices of two sizes or pixel spacings ({path.name}); "
                             "a volume needs one grid")
    if len(read) < 2:
        raise ImageError(f"series {uid} has one slice; a 3-D model needs a volume")
    distances = np.array([np.dot(geometry.position, first.normal) for geometry in geometries])
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    gaps = np.diff(distances[order])
    if gaps.min() <= 1e-3:
        raise ImageError(f"series {uid} has two slices at one position ({read[order[int(np.argmin(gaps))]][1].name}); "
                         "remove the repeated slice")
    spacing = float(np.median(gaps))
    if gaps.max() > 1.5 * spacing:
        where = int(np.argmax(gaps))
        raise ImageError(f"series {uid} is missing a slice: {gaps[where]:.3g} mm between "
                         f"{read[order[where]][1].name} and {read[order[where + 1]][1].name} where slices are "
                         f"{spacing:.3g} mm apart")
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * spacing:
        raise ImageError(f"series {uid} has uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
                         "resample it to even slices first")
    return geometries, order, float(np.mean(gaps))


def _cosines(geometry: SliceGeometry) -> str:
    return "\\".join(f"{value:g}" for value in geometry.orientation)


def _affine(first: SliceGeometry, spacing: float) -> np.ndarray:
    """The RAS affine of voxel (column i, row j, slice k): column i moves along the row direction
    by the spacing between columns, row j along the column direction by the spacing between rows,
    slice k along the normal by the slice spacing, from the first slice's position."""
    row_cosine, column_cosine = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    between_rows, between_columns = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * between_columns
    lps[:3, 1] = column_cosine * between_rows
    lps[:3, 2] = first.normal * spacing
    lps[:3, 3] = first.position
    return LPS_TO_RAS @ lps
