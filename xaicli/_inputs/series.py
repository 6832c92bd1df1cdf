"""DICOM volumes for 3-D models (pydicom and numpy): the single-frame files of a folder that share a
SeriesInstanceUID are one volume (a series), and so is a multi-frame file whose frames carry their
positions (enhanced CT and MR); the slices are ordered by their position along the slice normal,
the voxel-to-world affine computed from the geometry the files carry.

DICOM places voxels in LPS (x to the patient's left, y to posterior, z to superior);
NIfTI's world is RAS, so x and y change sign."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .._errors import ImageError
from .dicom import DicomPixels, frame_value, read_dicom, to_pictures
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

    files = list(files)
    geometries = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            geometries.append(SliceGeometry(_floats(dataset.ImagePositionPatient),
                                            _floats(dataset.ImageOrientationPatient),
                                            _floats(dataset.PixelSpacing), (int(dataset.Rows), int(dataset.Columns))))
        except Exception as exc:  # noqa: BLE001 (pydicom raises assorted types on bad headers)
            raise ImageError(f"{path.name} of series {uid}: cannot read its geometry ({exc})") from None
    order, spacing = _ordered(geometries, [path.name for path in files], f"series {uid}")
    # float32 holds any modality value a scanner stores (16 bits, rescaled) and halves float64's memory
    values = np.empty((len(order), *geometries[0].size), np.float32)
    shallow = True
    for position, index in enumerate(order):
        try:
            pixels = read_dicom(files[index])
        except ImageError as exc:
            raise ImageError(f"{files[index].name} of series {uid}: {exc}") from None
        if pixels.colour or pixels.frames.shape[1:] != values.shape[1:]:
            raise ImageError(f"series {uid} holds colour images or frames of another size ({files[index].name}); "
                             "a 3-D model takes one grayscale grid")
        values[position] = pixels.frames[0]
        shallow = shallow and pixels.shallow
        if not position:
            window, inverted = pixels.window, pixels.inverted
    return _volume(DicomPixels(values, window, inverted, shallow), geometries[order[0]], spacing, intensity)


def read_multiframe(path: Path, intensity: Intensity) -> tuple[np.ndarray, np.ndarray, str]:
    """A multi-frame DICOM file as one volume, as ``read_series`` gives a series: its frames
    ordered along the slice normal by their positions (each frame's Plane Position in an enhanced
    file's functional groups, or one ImagePositionPatient stepped by SpacingBetweenSlices), with
    orientation and pixel spacing from the frame's, the shared functional groups or the file's.

    Raises:
        ImageError: one line: a single frame, frames with no positions, or what ``read_series``
            reports of slices.
    """
    import pydicom

    what = f"multi-frame {path.name}"
    pixels = read_dicom(path)
    if len(pixels.frames) == 1:
        raise ImageError("a single-frame DICOM file is read as a volume with the other slices of its series (files "
                         "in one folder sharing a SeriesInstanceUID, with ImagePositionPatient, ImageOrientationPatient "
                         "and PixelSpacing); this one has no series to join")
    if pixels.colour:
        raise ImageError(f"{what} holds colour frames; a 3-D model takes grayscale volumes")
    geometries = _frame_geometries(pydicom.dcmread(path, stop_before_pixels=True), len(pixels.frames), what)
    order, spacing = _ordered(geometries, [f"frame {n + 1}" for n in range(len(geometries))], what)
    ordered = DicomPixels(pixels.frames[order], pixels.window, pixels.inverted, pixels.shallow)
    return _volume(ordered, geometries[order[0]], spacing, intensity)


def _frame_geometries(dataset, count: int, what: str) -> list[SliceGeometry]:
    """Each frame's geometry from the functional groups (its own, then the shared ones), the
    file's own attributes filling what they do not say."""
    size = (int(dataset.Rows), int(dataset.Columns))
    geometries = []
    try:
        for index in range(count):
            orientation = _frame_or_file(dataset, index, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _frame_or_file(dataset, index, "PixelMeasuresSequence", "PixelSpacing")
            position = frame_value(dataset, index, "PlanePositionSequence", "ImagePositionPatient")
            if position is None:
                position = _stepped_position(dataset, orientation, index)
            if orientation is None or spacing is None or position is None:
                raise ImageError(f"{what} does not say where its frames lie (no Plane Position, Plane Orientation "
                                 "or Pixel Measures in its functional groups); a 3-D model needs the volume's "
                                 "geometry: export it as enhanced CT/MR or as a series")
            geometries.append(SliceGeometry(_floats(position), _floats(orientation), _floats(spacing), size))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ImageError(f"{what}: cannot read its frames' geometry ({exc})") from None
    return geometries


def _frame_or_file(dataset, frame: int, sequence: str, keyword: str):
    value = frame_value(dataset, frame, sequence, keyword)
    return dataset.get(keyword) if value is None else value


def _stepped_position(dataset, orientation, index: int):
    """Frame ``index``'s position when the file gives one ImagePositionPatient for the first
    frame and SpacingBetweenSlices (as nuclear medicine and some converted files do); None otherwise."""
    first, step = dataset.get("ImagePositionPatient"), dataset.get("SpacingBetweenSlices")
    if first is None or step is None or orientation is None:
        return None
    normal = np.cross(_floats(orientation)[:3], _floats(orientation)[3:])
    return tuple(np.array(_floats(first)) + index * float(step) * normal)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(value) for value in values)


def _volume(pixels: DicomPixels, first: SliceGeometry, spacing: float,
            intensity: Intensity) -> tuple[np.ndarray, np.ndarray, str]:
    """Slices (F, rows, columns), in order along the normal, as (columns, rows, slices) 8-bit
    values mapped together, with their RAS affine and how they were mapped."""
    pictures, mapped = to_pictures(pixels, intensity)
    return np.ascontiguousarray(np.transpose(pictures, (2, 1, 0))), _affine(first, spacing), mapped


def _ordered(geometries: list[SliceGeometry], names: list[str], what: str) -> tuple[list[int], float]:
    """The slices' order along the normal and the slice spacing, checked; ``names`` say which
    slice a message means (file names, or frames)."""
    first = geometries[0]
    for geometry, name in zip(geometries, names):
        if np.abs(np.subtract(geometry.orientation, first.orientation)).max() > ORIENTATION_TOLERANCE:
            raise ImageError(f"{what} has two orientations ({_cosines(first)} and {_cosines(geometry)}, "
                             f"{name}); export each orientation as its own series")
        if geometry.size != first.size or not np.allclose(geometry.pixel_spacing, first.pixel_spacing):
            raise ImageError(f"{what} has slices of two sizes or pixel spacings ({name}); a volume needs one grid")
    if len(geometries) < 2:
        raise ImageError(f"{what} has one slice; a 3-D model needs a volume")
    distances = np.array([np.dot(geometry.position, first.normal) for geometry in geometries])
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    gaps = np.diff(distances[order])
    if gaps.min() <= 1e-3:
        raise ImageError(f"{what} has two slices at one position ({names[order[int(np.argmin(gaps))]]}); "
                         "remove the repeated slice")
    spacing = float(np.median(gaps))
    if gaps.max() > 1.5 * spacing:
        where = int(np.argmax(gaps))
        raise ImageError(f"{what} is missing a slice: {gaps[where]:.3g} mm between {names[order[where]]} and "
                         f"{names[order[where + 1]]} where slices are {spacing:.3g} mm apart")
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * spacing:
        raise ImageError(f"{what} has uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); "
                         "resample it to even slices first")
    return order, float(np.mean(gaps))


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
