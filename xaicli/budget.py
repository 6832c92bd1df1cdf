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
import threading
from typing import Iterator

RENDER_BYTES_PER_PIXEL = 24  # upsampled map (4), colours (3), blend (3 + 3), PNG rows (3 + 3), index, mask, slack
DECODE_BYTES_PER_PIXEL = 8  # Pillow's decoded image (3 or 4) and the RGB array (3), with slack


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

    def release(self, size: int) -> None:
        """Give back what ``try_keep`` accounted."""
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
