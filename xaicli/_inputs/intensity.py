"""Intensity mapping of images deeper than 8 bits (16-bit PNG/TIFF, float TIFF) to the 0..255 the
model and the overlay see (numpy only).

A 12-bit MRI slice stored in 16 bits holds values like 100..3000; divided by 257 it becomes an
almost black image. ``--intensity`` says how such an image is brought to 8 bits; 8-bit images
are never changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._errors import UsageError

KINDS = {
    "auto": "the image's own window when it carries one (DICOM), otherwise minmax",
    "range": "the value type's full range: 16-bit integers by 0..65535, floats by 0..1 (or 0..255 when larger)",
    "minmax": "each image's own lowest..highest value stretched to 0..255",
    "percentile:LO,HI": "each image's LO..HI percentiles stretched to 0..255, beyond them clipped (robust for MRI)",
    "window:CENTER,WIDTH": "the radiology window, in stored units (rescaled units for DICOM)",
}


@dataclass(frozen=True)
class Intensity:
    """One ``--intensity`` choice: ``kind`` of auto, range, minmax, percentile or window, and its
    two numbers (percentiles LO, HI, or window CENTER, WIDTH)."""

    kind: str
    low: float = 0.0
    high: float = 0.0


def parse_intensity(text: str) -> Intensity:
    """``auto``, ``range``, ``minmax``, ``percentile:LO,HI`` (0 <= LO < HI <= 100) or
    ``window:CENTER,WIDTH`` (WIDTH >= 1); a one-line UsageError otherwise."""
    kind, _, numbers = text.strip().partition(":")
    kind = kind.lower()
    if kind in ("auto", "range", "minmax") and not numbers:
        return Intensity(kind)
    if kind in ("percentile", "window"):
        try:
            first, second = (float(n) for n in numbers.split(","))
        except ValueError:
            first = second = float("nan")
        if kind == "percentile" and 0 <= first < second <= 100:
            return Intensity(kind, first, second)
        if kind == "window" and np.isfinite(first) and second >= 1:
            return Intensity(kind, first, second)
    raise UsageError(f"--intensity {text!r}: give auto, range, minmax, percentile:LO,HI with 0 <= LO < HI <= 100 "
                     "(e.g. percentile:1,99) or window:CENTER,WIDTH with WIDTH >= 1 (e.g. window:40,400)")


SLAB_VALUES = 1 << 22  # values mapped at a time: a volume's float copies stay at a few tens of MB


def to_8bit(values: np.ndarray, intensity: Intensity, own_window: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """Map a deep grayscale image, or a volume, to 0..255.

    Args:
        values: (H, W) or (D, H, W) integers or floats of any range; NaN and infinities count as
            the lowest value. A volume's mapping is set from all of it and applied a slab at a
            time, so that its float copies stay small however large the volume.
        intensity: the ``--intensity`` choice; ``auto`` takes ``own_window`` (CENTER, WIDTH) when
            the file carries one, otherwise ``minmax``.

    Returns:
        uint8 of the same shape, and what was done for the ``note`` column ('' for ``range``,
        which is the type's fixed mapping).
    """
    chosen = intensity
    if chosen.kind == "auto":
        chosen = Intensity("window", *own_window) if own_window else Intensity("minmax")
    finite = np.isfinite(values) if np.issubdtype(values.dtype, np.floating) else None
    if finite is not None and not finite.all():
        lowest = float(values[finite].min()) if finite.any() else 0.0
        values = np.where(finite, values, lowest)
    if chosen.kind == "range":
        return _in_slabs(values, _type_range_mapping(values)), ""
    if chosen.kind == "window":
        return (_in_slabs(values, lambda part: _windowed(part, chosen.low, chosen.high)),
                f"intensity: window {chosen.low:g},{chosen.high:g}")
    if chosen.kind == "percentile":
        low, high = (float(v) for v in np.percentile(values, [chosen.low, chosen.high]))
        how = f"percentile {chosen.low:g}..{chosen.high:g}"
    else:
        low, high = float(values.min()), float(values.max())
        how = "minmax"
    return _in_slabs(values, lambda part: _stretched(part, low, high)), f"intensity: {how} ({low:g}..{high:g} to 0..255)"


def _in_slabs(values: np.ndarray, mapping: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``mapping`` (values to uint8, value by value) applied along the first axis a slab of about
    ``SLAB_VALUES`` at a time."""
    if values.size <= SLAB_VALUES or values.ndim < 2:
        return mapping(values)
    result = np.empty(values.shape, np.uint8)
    step = max(1, SLAB_VALUES // (values.size // len(values)))
    for start in range(0, len(values), step):
        result[start:start + step] = mapping(values[start:start + step])
    return result


def _type_range_mapping(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Integers by the 16-bit range, floats by [0, 1] (or as 0..255 when any goes beyond 1)."""
    if np.issubdtype(values.dtype, np.floating):
        scale = np.float32(255.0 if values.max(initial=0.0) <= 1.0 else 1.0)
        return lambda part: _rounded(part.astype(np.float32) * scale)
    return lambda part: _rounded(part.astype(np.float32) / 257.0)


def _stretched(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low``..``high`` to 0..255 linearly, clipped beyond; a flat image becomes 0."""
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return _rounded((values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low)))


def _windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM linear window (PS3.3 C.11.2.1.2.1): values up to c - 0.5 - (w - 1) / 2 are 0,
    above c - 0.5 + (w - 1) / 2 are 255, linear between."""
    if width <= 1:
        return np.where(values.astype(np.float64) <= center - 0.5, 0, 255).astype(np.uint8)
    scaled = ((values.astype(np.float64) - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return _rounded(scaled)


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
