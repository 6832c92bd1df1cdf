"""The predictions table: its rows and columns, CSV and JSON Lines writers, and reading it back."""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Iterable


@dataclass(frozen=True)
class Row:
    """One line of the predictions table: one image explained by one method (and one target).

    ``status`` is ``ok``, ``error``, or ``skipped`` (``--skip-existing`` found every output);
    on ``error`` and ``skipped`` the prediction fields are ``None``. ``note`` says what the user
    should know of an image that was explained (e.g. only an animation's first frame).
    Probabilities are in [0, 1]; ``class_score`` is the explained score: the pre-activation
    logit, or for a regression the value (negated with ``--sign negative``). A regression has
    no probabilities (``pred_*`` and ``class_prob`` are empty) and its values in ``units``.
    """

    input: str
    status: str
    error: str
    note: str
    pred_index: int | None
    pred_label: str
    pred_prob: float | None
    class_index: int | None
    class_label: str
    class_prob: float | None
    class_score: float | None
    method: str
    layer: str
    output: str
    rank: int | None = None  # --target topk: the explained class's rank among the image's (1 = best)
    top: tuple["Ranked", ...] = ()  # the K best classes, for --top-k columns
    true_label: str = ""  # --true-labels: the image's label(s), ';'-joined for a multi-label model ('' when none)
    correct: bool | None = None  # --true-labels: the prediction is the true label (set) (None: no label or prediction)
    figures: dict[str, float | bool] = field(default_factory=dict)  # metric name -> value (FIGURE_COLUMNS)
    units: tuple[float, ...] = ()  # every label's probability (multi-label) or every unit's value (regression)
    positive: tuple[str, ...] = ()  # multi-label: the labels at or above the threshold (names, or indices)
    region_pixels: int | None = None  # segmentation: the explained region's size on the output grid


@dataclass(frozen=True)
class Ranked:
    """One of an image's best classes: index, label ('' without labels) and probability."""

    index: int
    label: str
    prob: float


PER_UNIT = {"prob": "every label's probability (multi-label)", "value": "every unit's value (regression)"}


@dataclass(frozen=True)
class Layout:
    """The columns of a run's table beyond the fixed ones (``COLUMNS``): ``top_k`` ranked classes,
    true labels (``truth``), ``figures`` (names of ``FIGURE_COLUMNS``), the explained class's rank
    (``ranked``, for ``--target topk``), a segmentation's region size (``regions``), and a column per unit of a multi-label model (``per_unit``
    'prob', with its ``positive`` labels) or a regression ('value'), named by ``units``. JSON
    Lines holds the units as one object column (``probs`` or ``values``), CSV as a column each
    (``prob_<unit>``, ``value_<unit>``, or ``value`` for a single value)."""

    table_format: str = "csv"
    top_k: int = 0
    truth: bool = False
    figures: tuple[str, ...] = ()
    ranked: bool = False
    per_unit: str = ""
    units: tuple[str, ...] = ()
    regions: bool = False  # a segmentation: each row's region size (region_pixels)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in order."""
        return (_with_rank(COLUMNS, self.ranked) + (("positive",) if self.per_unit == "prob" else ())
                + ((REGION_COLUMN,) if self.regions else ())
                + (TRUTH_COLUMNS if self.truth else ()) + tuple(FIGURE_COLUMNS[f] for f in self.figures)
                + self.unit_columns + top_columns(self.top_k))

    @property
    def unit_columns(self) -> tuple[str, ...]:
        """The columns of the units: one object column in JSON Lines, one per unit in CSV."""
        if not self.per_unit:
            return ()
        if self.per_unit == "value" and len(self.units) == 1:
            return ("value",)
        if self.table_format == "jsonl":
            return (f"{self.per_unit}s",)
        return tuple(f"{self.per_unit}_{name}" for name in self.units)

    def cells(self, row: Row) -> dict[str, object]:
        """The row's values by column, the --top-k and unit columns empty where there is no prediction."""
        values: dict[str, object] = {c: getattr(row, c) for c in _with_rank(COLUMNS, self.ranked)}
        if self.per_unit == "prob":
            values["positive"] = ";".join(row.positive) if row.status == "ok" and row.units else ""
        if self.regions:
            values[REGION_COLUMN] = row.region_pixels
        values.update({c: getattr(row, c) for c in (TRUTH_COLUMNS if self.truth else ())})
        values.update({FIGURE_COLUMNS[f]: row.figures.get(f) for f in self.figures})
        values.update(self._unit_cells(row))
        for rank in range(self.top_k):
            ranked = row.top[rank] if rank < len(row.top) else None
            values[f"top{rank + 1}_index"] = ranked.index if ranked else None
            values[f"top{rank + 1}_label"] = ranked.label if ranked else ""
            values[f"top{rank + 1}_prob"] = ranked.prob if ranked else None
        return values

    def _unit_cells(self, row: Row) -> dict[str, object]:
        columns = self.unit_columns
        if not columns:
            return {}
        if len(columns) == 1 and len(self.units) > 1:  # JSON Lines: one object
            return {columns[0]: dict(zip(self.units, map(_rounded, row.units))) if row.units else None}
        return {column: (row.units[i] if i < len(row.units) else None) for i, column in enumerate(columns)}


TRUTH_COLUMNS = ("true_label", "correct")
RANK_COLUMN = "rank"
REGION_COLUMN = "region_pixels"
COLUMNS = tuple(f.name for f in fields(Row)
                if f.name not in ("top", "figures", "units", "positive", RANK_COLUMN, REGION_COLUMN, *TRUTH_COLUMNS))
FIGURE_COLUMNS = {"deletion": "deletion_auc", "insertion": "insertion_auc", "pointing": "pointing_hit",
                  "energy": "energy_in", "iou": "iou"}


def _with_rank(columns: tuple[str, ...], ranked: bool) -> tuple[str, ...]:
    """``columns`` with ``rank`` beside the explained class's columns, when ``ranked``."""
    if not ranked:
        return columns
    after = columns.index("class_score") + 1
    return columns[:after] + (RANK_COLUMN,) + columns[after:]


def top_columns(top_k: int) -> tuple[str, ...]:
    """The extra columns of ``--top-k K``: top1_index, top1_label, top1_prob, top2_index, ..."""
    return tuple(f"top{rank}_{part}" for rank in range(1, top_k + 1) for part in ("index", "label", "prob"))


def unit_values(record: dict[str, object], per_unit: str) -> dict[str, float]:
    """A table row's units read back (``Layout``): unit name -> probability (``per_unit`` 'prob')
    or value ('value'), from the object column or the columns of either format."""
    held = record.get(f"{per_unit}s")
    if isinstance(held, dict):
        return {str(name): float(value) for name, value in held.items() if value is not None}
    if per_unit == "value" and record.get("value") not in (None, ""):
        return {"value": float(record["value"])}
    prefix = f"{per_unit}_"
    return {column[len(prefix):]: float(value) for column, value in record.items()
            if column.startswith(prefix) and value not in (None, "")}


def row_record(row: Row, layout: Layout = Layout()) -> dict[str, object]:
    """The row as a JSON Lines table holds it: column -> value (numbers rounded to 6 decimals)."""
    return {column: _json_value(value) for column, value in layout.cells(row).items()}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


TABLE_FORMATS = ("csv", "jsonl")


class PredictionsWriter:
    """Writes rows with the columns of ``layout`` as CSV (a header line first) or JSON Lines (one
    object per row, keys in column order, numbers rounded to 6 decimals, empty values as null).
    Each call writes whole lines and flushes, so a reader never sees half a row."""

    def __init__(self, stream: IO[str], layout: Layout = Layout()) -> None:
        self._stream = stream
        self._layout = layout
        self.columns = layout.columns
        self._csv = csv.writer(stream, lineterminator="\n")
        if layout.table_format == "csv":
            self._csv.writerow(self.columns)
        stream.flush()

    def write_records(self, records: Iterable[dict[str, object]]) -> None:
        """Write rows read back by ``read_table`` from a table with the same columns, unchanged."""
        for record in records:
            if self._layout.table_format == "csv":
                self._csv.writerow([record[c] for c in self.columns])
            else:
                self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()

    def write(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if self._layout.table_format == "csv":
                self._csv.writerow([_cell(value) for value in self._layout.cells(row).values()])
            else:
                self._stream.write(json.dumps(row_record(row, self._layout)) + "\n")
        self._stream.flush()


class Tee:
    """Writes to each of ``streams`` (the table on standard output and the copy kept in OUT).
    Not an ``io`` stream: those flush again when collected, after the copy is closed."""

    def __init__(self, *streams: IO[str]) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()


def open_table(path: Path) -> WholeLines:
    """Open a predictions table for writing. A file name that is not valid UTF-8 is written
    with \\xNN-style escapes (``table_text``), so the table itself stays valid UTF-8."""
    return WholeLines(path)


class WholeLines:
    """A text file that takes what was written between two flushes all together or not at all:
    a write that fails (a full disk) is cut back to the previous flush, so the file never holds
    half a row. Text is UTF-8, undecodable file-name bytes as backslash escapes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file = open(path, "wb", buffering=0)
        self._pending: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        """Write what came since the last flush, whole; on failure, the file is as it was and the
        OSError (named by the table's path) is raised."""
        data = memoryview("".join(self._pending).encode("utf-8", "backslashreplace"))
        self._pending.clear()
        try:
            while data:
                data = data[self._file.write(data):]
        except OSError as exc:
            self._file.truncate(self._size)
            self._file.seek(self._size)
            raise OSError(exc.errno, exc.strerror, str(self._path)) from None
        self._size = self._file.tell()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()

    def __enter__(self) -> WholeLines:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def table_text(text: str) -> str:
    """``text`` as it reads back from a table: undecodable bytes of a file name become their
    backslash escape, so rows can be matched with the paths found on disk."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def read_table(path: Path, table_format: str) -> tuple[tuple[str, ...], list[dict[str, object]]]:
    """The columns and rows of a table this tool wrote; CSV cells as text, JSONL values as JSON.
    A last line cut short (a run killed mid-write) is dropped."""
    with open(path, newline="", encoding="utf-8") as stream:
        if table_format == "csv":
            reader = csv.reader(stream)
            columns = tuple(next(reader, ()))
            return columns, [dict(zip(columns, cells)) for cells in reader if len(cells) == len(columns)]
        records = []
        for line in stream:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return (tuple(records[0]) if records else ()), records


def _rounded(value: float) -> float:
    return round(float(value), 6)


def _json_value(value: object) -> object:
    if isinstance(value, float):
        return _rounded(value)
    return None if value == "" else value
