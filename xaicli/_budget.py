"""Bytes in flight, bounded: decoded originals kept for rendering, and the working memory of the
decodes and renders under way.

Two kinds of holders share one limit. A decoded original is *kept* only when it fits in half
of it (``try_keep``); otherwise it is dropped and read again when its outputs are rendered, so
memory does not grow with batch size times image size. Work (a decode or a render) *waits*
until its estimate fits (``working``), but never while no other work is under way, so the run
cannot deadlock on originals that only a later render would release. Kept originals never take
more than half, so any work of at most half the budget fits beside them and the total never
exceeds the limit; an image whose work is larger still gets done, alone. ``peak`` records the
most bytes ever accounted at once, which the tests check against the limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from typing import Iterator, Sequence

from ._outputs.render import strip_rows

# Measured on a 24-MP photo: a strip being upsampled, coloured, blended and deflated holds ~40
# bytes a strip pixel (a panel's strip is three images wide). JPEG and WebP encode a whole picture,
# which Pillow holds in 4 bytes a pixel, plus the encoder's own buffers: ~1 byte more for JPEG,
# ~6 for WebP (it converts to 32-bit ARGB and keeps its analysis).
STRIP_BYTES_PER_PIXEL = 40
WHOLE_PICTURE_BYTES_PER_PIXEL = {"jpeg": 5, "webp": 10}


def render_estimate(size: tuple[int, int], kinds: Sequence[str], image_format: str, reread_bytes: int = 0) -> int:
    """Bytes to draw one image's files of ``kinds`` (overlay, heatmap, raw, panel) at ``size``
    (height, width), one file at a time. ``reread_bytes``: what reading the original again
    holds (``images.decode_bytes``), when it was not kept."""
    height, width = size
    panes = 3 if "panel" in kinds else 1
    drawing = min(height, strip_rows(width)) * width * panes * STRIP_BYTES_PER_PIXEL
    drawing += height * width * panes * WHOLE_PICTURE_BYTES_PER_PIXEL.get(image_format, 0)  # PNG: by strips
    return drawing + reread_bytes


class MemoryBudget:
    """A byte count shared by threads; see the module docstring."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0  # bytes of decoded originals held for rendering
        self.work = 0  # bytes of decodes and renders under way
        self.peak = 0
        self.dropped = 0  # originals not kept, read again to render
        self._workers = 0
        self._changed = threading.Condition()

    def try_keep(self, size: int) -> bool:
        """Account ``size`` bytes of a decoded original if they fit now; never waits."""
        with self._changed:
            if self.kept + size > self.limit // 2 or self.kept + self.work + size > self.limit:
                self.dropped += 1
                return False
            self.kept += size
            self._note_peak()
            return True

    def hold(self, size: int) -> None:
        """Account ``size`` bytes that must stay in memory (a volume whose slices are being
        explained) without waiting; work then waits for them as for kept originals."""
        with self._changed:
            self.kept += size
            self._note_peak()

    def release(self, size: int) -> None:
        """Give back what ``try_keep`` or ``hold`` accounted."""
        with self._changed:
            self.kept -= size
            self._changed.notify_all()

    @contextlib.contextmanager
    def working(self, size: int) -> Iterator[None]:
        """Account ``size`` bytes of working memory for the block, waiting until they fit or no
        other work is under way."""
        with self._changed:
            self._changed.wait_for(lambda: not self._workers or self.kept + self.work + size <= self.limit)
            self._workers += 1
            self.work += size
            self._note_peak()
        try:
            yield
        finally:
            with self._changed:
                self._workers -= 1
                self.work -= size
                self._changed.notify_all()

    def _note_peak(self) -> None:
        self.peak = max(self.peak, self.kept + self.work)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def return_large_blocks_to_the_system(threshold: int = 1 << 20, keep_free: int = 16 << 20) -> bool:
    """Have glibc's malloc serve every block of ``threshold`` bytes or more from its own mapping,
    given back to the system when freed, and keep up to ``keep_free`` bytes of freed smaller
    blocks for reuse. By default glibc raises the mapping threshold up to 32 MB as large blocks
    come and go, and then keeps freed strips and images in each thread's arena: on 24-MP photos
    that held ~270 MB beyond the budget. Fixing the threshold also fixes the trim threshold at
    128 KB unless it is set too; then every 500x400 image's buffers went back to the system and
    were faulted in again (2 million page faults on 192 photos, 40% slower). Returns whether
    it applied (glibc only)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, keep_free) == 1)
