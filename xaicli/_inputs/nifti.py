"""NIfTI volumes (.nii, .nii.gz) read with nibabel (the ``medical`` extra), turned to the closest
canonical (RAS) orientation so that slices come out the same whatever order the scanner stored
the voxels in."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import ImageError, first_line
from .dicom import MEDICAL_EXTRA

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# --slice-axis -> (the RAS voxel axis held fixed, the letter rows and file names use)
SLICE_AXES = {"axial": (2, "z"), "coronal": (1, "y"), "sagittal": (0, "x")}
SLICE_AXIS_HELP = {
    "axial": "slices z, counted from inferior; shown with anterior up and the subject's right on the left",
    "coronal": "slices y, counted from posterior; shown with superior up and the subject's right on the left",
    "sagittal": "slices x, counted from the subject's left; shown with superior up and anterior on the left",
}


@dataclass(frozen=True)
class Volume:
    """One 3-D volume in RAS voxel order: ``values[i, j, k]`` with i growing to the subject's
    right, j to anterior, k to superior. ``values`` is (I, J, K) in the file's type (floats when
    the header scales them); ``note`` says when a 4-D file gave its first volume only."""

    values: np.ndarray
    note: str = ""
    affine: np.ndarray | None = None  # the file's 4x4 voxel-to-world matrix, for its stored voxel order
    orientation: np.ndarray | None = None  # the stored axes' way to RAS (nibabel's io_orientation)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # voxel size along i, j, k (RAS), in mm


def is_nifti_name(name: str) -> bool:
    """True for .nii and .nii.gz names (any letter case)."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def read_volume(path: Path) -> Volume:
    """Read a NIfTI file's first 3-D volume, reoriented to RAS; one-line ``ImageError``s for files
    that are not NIfTI, are cut short, are not 3-D or 4-D, or hold non-finite voxels."""
    nibabel = _nibabel()
    try:
        return volume_of_image(nibabel.load(path))
    except ImageError:
        raise
    except (FileNotFoundError, PermissionError) as exc:
        raise ImageError.unreadable(exc) from None
    except nibabel.filebasedimages.ImageFileError:
        raise ImageError("not a NIfTI file (no NIfTI header found)") from None
    except (EOFError, zlib.error, gzip.BadGzipFile):
        raise ImageError("the NIfTI file is cut short (truncated)") from None
    except Exception as exc:  # nibabel raises assorted types on malformed headers and data
        reason = first_line(exc)
        if "size" in reason.lower() or "buffer" in reason.lower():
            reason = "the file is cut short (truncated)"
        raise ImageError(f"cannot read the NIfTI file: {reason}") from None


def volume_of_image(image) -> Volume:
    """A nibabel image's (a file's, or one made in memory) first 3-D volume, reoriented to RAS.

    Raises:
        ImageError: the image is not 3-D or 4-D, or holds non-finite voxels (one line).
    """
    from nibabel.orientations import apply_orientation, io_orientation

    shape = image.shape
    if len(shape) not in (3, 4):
        raise ImageError(f"a NIfTI volume must be 3-D or 4-D; this one is {len(shape)}-D {tuple(shape)}")
    stored = np.asanyarray(image.dataobj[..., 0] if len(shape) == 4 else image.dataobj)
    orientation = io_orientation(image.affine)
    values = apply_orientation(stored, orientation)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ImageError(f"the volume holds {bad} non-finite voxels (NaN or inf); replace them (e.g. by 0) and run again")
    volumes = shape[3] if len(shape) == 4 else 1
    note = f"4-D volume: explained its first volume of {volumes}" if volumes > 1 else ""
    return Volume(np.ascontiguousarray(values), note, np.asarray(image.affine, np.float64), orientation,
                  ras_spacing(orientation, image.header.get_zooms()[:3]))


def ras_spacing(orientation: np.ndarray, zooms: tuple[float, ...]) -> tuple[float, float, float]:
    """The stored axes' voxel sizes, in RAS axis order (1 mm where the header gives none)."""
    spacing = [1.0, 1.0, 1.0]
    for stored, (axis, _flip) in enumerate(orientation):
        if np.isfinite(axis) and zooms[stored] > 0:
            spacing[int(axis)] = float(zooms[stored])
    return spacing[0], spacing[1], spacing[2]


def volume_voxels(path: Path) -> tuple[int, int]:
    """The first volume's voxel count and bytes a voxel as stored, from the header alone
    ((0, 0) when it cannot be read)."""
    try:
        image = _nibabel().load(path)
        return int(np.prod(image.shape[:3])), np.dtype(image.get_data_dtype()).itemsize
    except Exception:  # noqa: BLE001 (read_volume reports why)
        return 0, 0


def slices_of(volume: np.ndarray, axis: str) -> np.ndarray:
    """The (N, H, W) slices of a RAS ``volume`` (I, J, K) along ``axis`` of ``SLICE_AXES``, each
    oriented as a radiology viewer and DICOM store it: axial with anterior at the top and the
    subject's right on the left; coronal with superior at the top and right on the left;
    sagittal with superior at the top and anterior on the left. Slice n is voxel index n."""
    if axis == "axial":  # [k, r, c] = volume[I-1-c, J-1-r, k]
        return np.transpose(volume[::-1, ::-1, :], (2, 1, 0))
    if axis == "coronal":  # [j, r, c] = volume[I-1-c, j, K-1-r]
        return np.transpose(volume[::-1, :, ::-1], (1, 2, 0))
    if axis == "sagittal":  # [i, r, c] = volume[i, J-1-c, K-1-r]
        return np.transpose(volume[:, ::-1, ::-1], (0, 2, 1))
    raise ValueError(f"unknown slice axis {axis!r}")


def _nibabel():
    try:
        import nibabel
        import nibabel.filebasedimages
    except ImportError:
        raise ImageError(f"reading NIfTI files needs nibabel: {MEDICAL_EXTRA}") from None
    return nibabel

