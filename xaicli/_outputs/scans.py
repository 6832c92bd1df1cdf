"""A 3-D model's map in the scan's own space: the NIfTI file that opens aligned over the scan in any
viewer, three orthogonal planes through the map's peak, and an axial mosaic (numpy, Pillow and
nibabel only).

Every picture keeps the scan's physical proportions: voxels are drawn at their size in
millimetres, so a scan of 0.5 x 0.5 x 3 mm voxels is not squashed."""

from __future__ import annotations

import struct
import zlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .._inputs.nifti import slices_of
from .._inputs.volumes import Scan, in_stored_order
from .mosaic import GAP, compose, draw_label, tile_size
from .render import caption_bar, overlay

PLANE_LONG_SIDE = 320  # the longest extent of the scan, in pixels of the .ortho picture
MOSAIC_SLICES = 30  # axial slices in a volume's mosaic, at most, evenly spaced
NIFTI_DATA_OFFSET = 352  # a single-file NIfTI-1's data follow its 348-byte header and 4 bytes of no extension
NIFTI_GZIP_LEVEL = 1  # a smooth float map: level 1 is within a few percent of 9, several times faster
CAPTION_HEIGHT = 24
PLANES = ("axial", "coronal", "sagittal")
# plane -> (RAS axis fixed by the plane, its letter, the RAS axes of the picture's rows and columns)
PLANE_AXES = {"axial": (2, "z", 1, 0), "coronal": (1, "y", 2, 0), "sagittal": (0, "x", 2, 1)}


def nifti_chunks(values: np.ndarray, scan: Scan) -> list[bytes]:
    """A map over the scan as a gzipped NIfTI-1 file, in chunks to write one after another:
    ``values`` (I, J, K) in RAS order put back into the file's stored voxel order, float32, with
    the scan file's affine as both its qform and sform (scanner space), so that viewers place it
    over the scan. The gzip header carries no time: the same map gives the same bytes."""
    import nibabel

    stored = in_stored_order(values.astype(np.float32, copy=False), scan)
    image = nibabel.Nifti1Image(np.empty((1, 1, 1), np.float32), scan.affine)
    header = image.header
    header.set_data_shape(stored.shape)
    image.set_qform(scan.affine, code=1)
    image.set_sform(scan.affine, code=1)
    header["descrip"] = b"xai map over the scan, 0..1"
    header["vox_offset"] = NIFTI_DATA_OFFSET
    # NIfTI stores voxels in Fortran order: the last axis' planes, one after another, each
    # compressed as it is made so that no copy of the whole map is ever held.
    compressor = zlib.compressobj(NIFTI_GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts, checksum, length = [], zlib.crc32(b""), 0
    for chunk in (header.binaryblock, bytes(NIFTI_DATA_OFFSET - header.sizeof_hdr),
                  *(stored[..., k].tobytes(order="F") for k in range(stored.shape[-1]))):
        checksum, length = zlib.crc32(chunk, checksum), length + len(chunk)
        parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    gzip_header = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"  # deflate, no name, no time, unknown OS
    return [gzip_header, *parts, struct.pack("<II", checksum, length & 0xFFFFFFFF)]


def peak_voxel(values: np.ndarray) -> tuple[int, int, int]:
    """(i, j, k) of the map's largest value: the first in C order among equals."""
    return tuple(int(n) for n in np.unravel_index(int(np.argmax(values)), values.shape))


def ortho_picture(scan: Scan, values: np.ndarray, alpha: float, lut: np.ndarray, caption: str,
                  at: tuple[int, int, int] | None = None) -> np.ndarray:
    """The axial, coronal and sagittal planes through voxel ``at`` (by default the map's peak)
    side by side, each with the map blended over the scan and labelled with its slice, and
    ``caption`` in a bar below: (H, W, 3) uint8.

    Args:
        scan: the volume, RAS (I, J, K) uint8, with its voxel spacing.
        values: (I, J, K) float map in [0, 1] over the scan.
        alpha: weight of the map's colour, in [0, 1].
        lut: (256, 3) uint8 colormap.
    """
    at = at or peak_voxel(values)
    scale = PLANE_LONG_SIDE / max(n * s for n, s in zip(scan.shape, scan.spacing))
    drawn = [(_plane_overlay(scan, values, plane, at[PLANE_AXES[plane][0]], scale, alpha, lut),
              f"{plane} {PLANE_AXES[plane][1]}={at[PLANE_AXES[plane][0]]}") for plane in PLANES]
    height = max(picture.shape[0] for picture, _ in drawn) + 2 * GAP
    width = sum(picture.shape[1] + GAP for picture, _ in drawn) + GAP
    canvas = Image.new("RGB", (width, height))
    left = GAP
    for picture, label in drawn:
        canvas.paste(Image.fromarray(picture), (left, GAP))
        draw_label(ImageDraw.Draw(canvas), label, left, GAP, picture.shape[1])
        left += picture.shape[1] + GAP
    bar = np.concatenate(list(caption_bar(caption, width, CAPTION_HEIGHT)))
    return np.concatenate([np.asarray(canvas), bar])


def axial_mosaic(scan: Scan, values: np.ndarray, alpha: float, lut: np.ndarray,
                 count: int = MOSAIC_SLICES) -> np.ndarray:
    """Up to ``count`` axial slices evenly spaced from the lowest to the highest, each with the
    map blended and labelled ``z=K``, in a grid (``mosaic.compose``): (H, W, 3) uint8."""
    depth = scan.shape[2]
    chosen = sorted({int(round(k)) for k in np.linspace(0, depth - 1, min(count, depth))})
    rows, columns = _plane_size(scan, "axial", 1.0)
    size = tile_size((rows, columns), len(chosen))
    scale = size[0] / rows
    tiles = [_plane_overlay(scan, values, "axial", k, scale, alpha, lut) for k in chosen]
    return compose([f"z={k}" for k in chosen], tiles)


def _plane_size(scan: Scan, plane: str, scale: float) -> tuple[int, int]:
    """(rows, columns) in pixels of ``plane`` drawn at ``scale`` pixels per millimetre."""
    _, _, row_axis, column_axis = PLANE_AXES[plane]
    return tuple(max(1, round(scan.shape[axis] * scan.spacing[axis] * scale)) for axis in (row_axis, column_axis))


def _plane_overlay(scan: Scan, values: np.ndarray, plane: str, index: int, scale: float, alpha: float,
                   lut: np.ndarray) -> np.ndarray:
    """Slice ``index`` of ``plane`` as a radiology viewer shows it (``nifti.slices_of``), the
    scan resized to its physical proportions at ``scale`` pixels per millimetre (bilinear) and
    the map blended over it: (rows, columns, 3) uint8."""
    rows, columns = _plane_size(scan, plane, scale)
    picture = Image.fromarray(np.ascontiguousarray(slices_of(scan.values, plane)[index])).convert("RGB")
    picture = picture.resize((columns, rows), Image.Resampling.BILINEAR)
    return overlay(picture, np.ascontiguousarray(slices_of(values, plane)[index]), alpha, lut)


def thumbnail_of(picture: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``picture`` (H, W, 3) uint8 shrunk to ``size`` (height, width), bilinear."""
    return np.asarray(Image.fromarray(picture).resize((size[1], size[0]), Image.Resampling.BILINEAR))
