"""Files that hold several images, multi-frame DICOM and NIfTI volumes, as stacks of 8-bit
pictures: which of their frames or slices a run explains (``--slices``), and the stacks held in
memory while those parts are being explained (numpy, Pillow, pydicom and nibabel only)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .._budget import MemoryBudget
from .._errors import ImageError, UsageError
from .dicom import dicom_frame_count, dicom_pixel_count, read_dicom, to_pictures
from .discover import PICTURE_SUFFIXES, InputImage, Part, image_suffix, is_dicom
from .intensity import Intensity, to_8bit
from .nifti import SLICE_AXES, is_nifti_name, read_volume, slices_of, volume_voxels
from .remote import materialize
from .raster import DEFAULT_MAX_PIXELS, check_pixel_limit, joined_notes, rgb_picture

SLICE_CHOICES = {
    "nonzero": "every slice (or frame) holding any non-zero value",
    "all": "every slice",
    "middle": "the middle slice only",
    "A:B": "slices A up to B-1, numbered as the table shows them (z=A; DICOM frames count from 1)",
}


@dataclass(frozen=True)
class SliceChoice:
    """``--slices``: ``kind`` nonzero, all, middle or range; ``start``..``stop`` (stop excluded) for range."""

    kind: str
    start: int = 0
    stop: int = 0


def parse_slices(text: str) -> SliceChoice:
    """``nonzero``, ``all``, ``middle`` or ``A:B`` (0 <= A < B); a one-line UsageError otherwise."""
    cleaned = text.strip().lower()
    if cleaned in ("nonzero", "all", "middle"):
        return SliceChoice(cleaned)
    start, colon, stop = cleaned.partition(":")
    if colon and start.isdigit() and stop.isdigit() and int(start) < int(stop):
        return SliceChoice("range", int(start), int(stop))
    raise UsageError(f"--slices {text!r}: give nonzero, all, middle or A:B with A < B (e.g. 40:80)")


@dataclass(frozen=True)
class Stack:
    """The images of one file in 8 bits, mapped together so that they stay comparable.

    ``pictures``: (N, H, W) grayscale or (N, H, W, 3) RGB uint8, image n being number
    ``first + n`` along ``axis`` ('frame', or 'z', 'y', 'x' for NIfTI slices). ``occupied``: (N,)
    whether the stored values of image n hold anything but zeros. ``note``: how the values were
    brought to 8 bits, and anything else the table should say of every image.
    """

    pictures: np.ndarray
    axis: str
    first: int
    occupied: np.ndarray
    note: str

    def picture(self, number: int) -> Image.Image:
        """Image ``number`` (as counted along ``axis``) as an RGB picture."""
        return rgb_picture(self.pictures[number - self.first])

    def chosen(self, choice: SliceChoice) -> list[int]:
        """The numbers of the images ``choice`` selects, in order; a one-line ``ImageError`` when none."""
        numbers = range(self.first, self.first + len(self.pictures))
        if choice.kind == "all":
            return list(numbers)
        if choice.kind == "middle":
            return [numbers[len(numbers) // 2]]
        if choice.kind == "nonzero":
            picked = [n for n in numbers if self.occupied[n - self.first]]
            if not picked:
                raise ImageError(f"every {self._noun} holds only zeros; --slices all explains them anyway")
            return picked
        picked = [n for n in numbers if choice.start <= n < choice.stop]
        if not picked:
            raise ImageError(f"--slices {choice.start}:{choice.stop} holds none of this file's {self._noun}s "
                             f"({self.axis}={numbers[0]}..{numbers[-1]})")
        return picked

    @property
    def _noun(self) -> str:
        return "frame" if self.axis == "frame" else "slice"


def holds_several(path: Path) -> bool:
    """True for files explained part by part: NIfTI volumes, and DICOM files of several frames
    (read from the header)."""
    return is_nifti_name(path.name) or (is_dicom(path) and dicom_frame_count(path) > 1)


def may_hold_several(path: Path) -> bool:
    """Whether ``holds_several`` must read the file: a NIfTI or a possible DICOM (by name)."""
    return is_nifti_name(path.name) or image_suffix(path.name) not in PICTURE_SUFFIXES


def read_stack(path: Path, intensity: Intensity, slice_axis: str = "axial") -> Stack:
    """A NIfTI volume's slices along ``slice_axis`` (RAS, ``nifti.slices_of``), or a DICOM file's
    frames, in 8 bits. Intensity statistics (minmax, percentiles) are those of the whole volume or
    of all frames, so that a slice's brightness means the same in every slice."""
    if is_nifti_name(path.name):
        volume = read_volume(path)
        axis_index, letter = SLICE_AXES[slice_axis]
        occupied = np.any(volume.values != 0, axis=tuple(a for a in range(3) if a != axis_index))
        if volume.values.dtype == np.uint8:  # 8-bit data is shown as it is
            eight_bit, mapped = volume.values, ""
        else:
            eight_bit, mapped = to_8bit(volume.values, intensity)
        pictures = np.ascontiguousarray(slices_of(eight_bit, slice_axis))
        return Stack(pictures, letter, 0, occupied, joined_notes(volume.note, mapped))
    pixels = read_dicom(path)
    frames, mapped = to_pictures(pixels, intensity)
    occupied = np.any(pixels.frames.reshape(len(pixels.frames), -1) != 0, axis=1)
    return Stack(frames, "frame", 1, occupied, mapped)


def load_bytes(path: Path) -> int:
    """What reading ``path`` as a stack holds at its peak, from its header: the stored values,
    their float32 working copy and the 8-bit result twice (mapped, then sliced)."""
    if is_nifti_name(path.name):
        voxels, stored = volume_voxels(path)
        return voxels * (stored + 4 + 2)
    return dicom_pixel_count(path) * (8 + 4 + 2)


class StackCache:
    """The stacks whose parts are being explained, each held from when its file is split into
    parts until its last part is done, and accounted in the run's memory budget meanwhile."""

    def __init__(self, budget: MemoryBudget, intensity: Intensity, slices: SliceChoice,
                 slice_axis: str = "axial", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._budget = budget
        self._intensity = intensity
        self._slices = slices
        self._slice_axis = slice_axis
        self._max_pixels = max_pixels
        self._held: dict[Path, list] = {}  # path -> [stack, parts not yet done]
        self._lock = threading.Lock()

    def split(self, items: Iterable[InputImage]) -> Iterator[InputImage]:
        """``items`` with each file of several images replaced by its chosen parts; a file that
        cannot be read or has no chosen part stays one item, with the reason as its ``error``."""
        for item in items:
            try:
                if item.url and may_hold_several(item.path):
                    materialize(item)
                if not holds_several(item.path):
                    yield item
                    continue
                yield from self._parts(item)
            except ImageError as exc:
                yield replace(item, error=str(exc))

    def _parts(self, item: InputImage) -> list[InputImage]:
        with self._budget.working(load_bytes(item.path)):
            stack = read_stack(item.path, self._intensity, self._slice_axis)
        check_pixel_limit(stack.pictures.shape[2], stack.pictures.shape[1], self._max_pixels)
        numbers = stack.chosen(self._slices)
        digits = max(3, len(str(stack.first + len(stack.pictures) - 1)))
        with self._lock:
            self._held[item.path] = [stack, len(numbers)]
        self._budget.hold(stack.pictures.nbytes)
        return [replace(item, part=Part(stack.axis, number, position, len(numbers), digits))
                for position, number in enumerate(numbers)]

    def picture(self, item: InputImage) -> tuple[Image.Image, str]:
        """The RGB picture of a part ``split`` gave, and the stack's note."""
        with self._lock:
            held = self._held.get(item.path)
        stack = held[0] if held else read_stack(item.path, self._intensity, self._slice_axis)  # released early
        return stack.picture(item.part.index), stack.note

    def done(self, item: InputImage) -> None:
        """One part of ``item``'s file is finished; the stack goes when its last part is."""
        with self._lock:
            held = self._held.get(item.path)
            if held is None:
                return
            held[1] -= 1
            if held[1]:
                return
            del self._held[item.path]
        self._budget.release(held[0].pictures.nbytes)
