"""An image's rows once its files are written: ok, error or skipped rows in the table's order, and the
mosaic of a volume's slices, written after its last one."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from .._errors import storage_failure
from .._evaluation.truth import MaskError
from .._explain.explainer import Explained
from .._inputs.discover import InputImage
from .._inputs.remote import discard
from .._inputs.stacks import StackCache
from .._outputs.mosaic import Sheet
from .._outputs.naming import mosaic_path, output_path, wants_mosaic
from .._outputs.table import Row
from .._outputs.writers import write_image
from .._runs.decisions import Prepared
from .._runs.record import ImageResult
from .._runs.rows import caption, error_row, explained_row, nothing_row
from .drawn import Figures, Outcome, put_on_store


@dataclass(frozen=True)
class Write:
    """The files of one image, method and explained class, being written in the pool; or, for
    an image with nothing to explain (no label present), the row that says so (``done`` None)."""

    method: str
    explained: Explained  # what the map explains (its tag names the files, its rank goes in the row) and the map
    path: Path | None  # the first --save kind, named in the table
    figures: Figures  # --metrics deletion and insertion of this map
    done: Future[list[Outcome]] | None  # the image's render: one outcome per write
    index: int  # this write's place in that list

    @property
    def tag(self) -> str:
        return self.explained.target.tag


@dataclass(frozen=True)
class Pending:
    """An image of an explained batch whose files are being written: its writes, or why it has none."""

    item: InputImage
    error: str
    note: str = ""
    skipped: bool = False
    carried: tuple[dict[str, object], ...] = ()
    index: int = -1
    writes: tuple[Write, ...] = ()


def finish(prepared: Prepared, pending: list[Pending], mosaics: Mosaics, stacks: StackCache) -> Iterator[ImageResult]:
    """Each image's result once its files are written, in order; a volume's slices go into its mosaics."""
    for entry in pending:
        if entry.carried:
            result = ImageResult(entry.item, (), entry.carried)
        else:
            result = _storage_lost(entry)
            if result is None:
                rows = list(_rows(prepared, entry))
                try:
                    if wants_mosaic(prepared.config, entry.item) and not entry.skipped:
                        rows = mosaics.add(entry, rows)
                    result = ImageResult(entry.item, tuple(rows))
                except OSError as exc:  # the output folder takes no more (other failures are rows)
                    result = ImageResult(entry.item, (), lost=storage_failure(exc))
        stacks.done(entry.item)
        discard(entry.item)
        yield result


def _storage_lost(entry: Pending) -> ImageResult | None:
    """The image's result when a file of it could not be written because the output folder takes
    no more files (a full disk): no rows, the run stops; None otherwise."""
    for write in entry.writes:
        if write.done is not None:
            lost = storage_failure(write.done.result()[write.index].error)
            if lost:
                return ImageResult(entry.item, (), lost=lost)
    return None


class Mosaics:
    """The mosaic sheets of the file whose parts are being finished, one per method and
    explained class; written when its last part is."""

    def __init__(self, prepared: Prepared) -> None:
        self._prepared = prepared
        self._sheets: dict[tuple[str, str], Sheet] = {}  # (method, tag) -> the file's sheet
        self._parts: list[str] = []  # labels of the file's parts added so far

    def add(self, entry: Pending, rows: list[Row]) -> list[Row]:
        """Add the part's tiles (a failed part leaves its cells empty, as does a part on which a
        label is not present); after the file's last part, write the mosaics. Returns ``rows``,
        where a mosaic that could not be written turns the last part's row of its method into an
        error row; a full output folder (``storage_failure``) raises its OSError."""
        config, part = self._prepared.config, entry.item.part
        if part.position == 0:
            self._sheets = {(method, tag): Sheet() for method in config.methods for tag in self._prepared.output_tags
                            if not self._prepared.dynamic_targets}
            self._parts = []
        outcomes = {(w.method, w.tag): (w, w.done.result()[w.index]) for w in entry.writes if w.done is not None}
        for key in outcomes:
            if key not in self._sheets:  # a label first present on this part
                self._sheets[key] = Sheet()
                for label in self._parts:
                    self._sheets[key].add(f"{label} not present", None)
        for key, sheet in self._sheets.items():
            write, outcome = outcomes.get(key, (None, None))
            text = (caption(self._prepared, write.explained.explanation, write.explained.index) if write
                    else "failed" if entry.error else "not present")
            sheet.add(f"{part.label} {text}", outcome.tile if outcome else None)
        self._parts.append(part.label)
        if not part.last:
            return rows
        failed = {}
        for (method, tag), sheet in self._sheets.items():
            path = mosaic_path(config, entry.item, method, tag)
            try:
                write_image(path, sheet.compose(), config.image_format)
                put_on_store(config, path)
            except OSError as exc:
                if storage_failure(exc):
                    raise
                failed[method] = f"cannot write the mosaic {config.shown(path)}: {exc.strerror or exc}"
        self._sheets = {}
        return [replace(_error_row(self._prepared, entry.item, row.method, failed[row.method]), rank=row.rank)
                if row.method in failed and row.status == "ok" else row for row in rows]


def _rows(prepared: Prepared, pending: Pending) -> Iterator[Row]:
    config = prepared.config
    if pending.skipped or pending.error:
        for method in config.methods:
            for target in prepared.targets:
                row = replace(_error_row(prepared, pending.item, method, pending.error), rank=target.rank)
                if pending.skipped:
                    path = output_path(config.out_dir, pending.item.output_relative, method, config.save[0], target.tag,
                                       config.image_format)
                    row = replace(row, status="skipped", output=prepared.config.shown(path))
                yield row
        return
    for write in pending.writes:
        if write.done is None:
            explained = write.explained
            yield nothing_row(prepared, explained.explanation, explained.index, write.method, name=pending.item.name,
                              reason=explained.target.reason, note=pending.note,
                              true_label=_true_label(prepared, pending.item))
            continue
        outcome = write.done.result()[write.index]
        error = outcome.error
        if isinstance(error, OSError):
            reason = f"cannot write {prepared.config.shown(write.path)}: {error.strerror or error}"
        elif isinstance(error, MaskError):
            reason = str(error)
        elif error is not None:
            reason = f"cannot read the image again to draw it: {error}"
        else:
            yield _ok_row(prepared, pending, write, outcome)
            continue
        yield replace(_error_row(prepared, pending.item, write.method, reason), rank=write.explained.target.rank)


def _true_label(prepared: Prepared, item: InputImage) -> str | None:
    """The image's true label(s) with --true-labels ('' when it has none), else None."""
    return None if prepared.truth is None else prepared.truth.label(item)


def _ok_row(prepared: Prepared, pending: Pending, write: Write, outcome: Outcome) -> Row:
    explained = write.explained
    return explained_row(
        prepared, explained.explanation, explained.index, write.method, name=pending.item.name, note=pending.note,
        output=prepared.config.shown(write.path), rank=explained.target.rank, top_k=prepared.config.top_k,
        figures={**write.figures, **outcome.figures}, true_label=_true_label(prepared, pending.item),
        region_pixels=explained.target.region_pixels)


def _error_row(prepared: Prepared, item: InputImage, method: str, error: str) -> Row:
    return error_row(prepared, item.name, method, error, _true_label(prepared, item))
