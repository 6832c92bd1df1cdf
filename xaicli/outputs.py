"""Files a run writes: overlay images (PNG, JPEG or WebP, atomically) and the predictions table."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable

import numpy as np
from isal import isal_zlib
from PIL import Image

from .render import Drawing

PNG_COMPRESS_LEVEL = 1  # ISA-L levels are 0..3; 1 is as fast as 0 and 14% smaller on photos
MANIFEST_NAME = "run.json"


def table_path(out_dir: Path, table_format: str, predictions: str | None) -> Path:
    """Where a run's table can be read back: ``--predictions PATH``, ``OUT/predictions.<format>``,
    or, when the table went to standard output, the copy kept for the page and ``--resume``,
    ``OUT/.predictions.<format>``."""
    if predictions == "-":
        return out_dir / f".predictions.{table_format}"
    return Path(predictions) if predictions else out_dir / f"predictions.{table_format}"


@dataclass(frozen=True)
class Row:
    """One line of the predictions table: one image explained by one method.

    ``status`` is ``ok``, ``error``, or ``skipped`` (``--skip-existing`` found every output);
    on ``error`` and ``skipped`` the prediction fields are ``None``. ``note`` says what the user
    should know of an image that was explained (e.g. only an animation's first frame).
    Probabilities are in [0, 1]; ``class_score`` is the explained pre-activation score (logit).
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
    true_label: str = ""  # --true-labels: the image's label ('' when it has none)
    correct: bool | None = None  # --true-labels: the prediction is the true label (None: no label or prediction)
    figures: dict[str, float | bool] = field(default_factory=dict)  # metric name -> value (metrics.COLUMN_OF)


@dataclass(frozen=True)
class Ranked:
    """One of an image's best classes: index, label ('' without labels) and probability."""

    index: int
    label: str
    prob: float


TRUTH_COLUMNS = ("true_label", "correct")
RANK_COLUMN = "rank"
COLUMNS = tuple(f.name for f in fields(Row) if f.name not in ("top", "figures", RANK_COLUMN, *TRUTH_COLUMNS))
FIGURE_COLUMNS = {"deletion": "deletion_auc", "insertion": "insertion_auc", "pointing": "pointing_hit",
                  "energy": "energy_in", "iou": "iou"}


def table_columns(top_k: int, truth: bool = False, figures: tuple[str, ...] = (), ranked: bool = False) -> tuple[str, ...]:
    """Every column of a table with ``top_k`` ranked classes, true labels, ``figures`` (names of
    ``FIGURE_COLUMNS``) and, for ``--target topk`` (``ranked``), the explained class's rank, in
    order."""
    return (_with_rank(COLUMNS, ranked) + (TRUTH_COLUMNS if truth else ())
            + tuple(FIGURE_COLUMNS[f] for f in figures) + top_columns(top_k))


def _with_rank(columns: tuple[str, ...], ranked: bool) -> tuple[str, ...]:
    """``columns`` with ``rank`` beside the explained class's columns, when ``ranked``."""
    if not ranked:
        return columns
    after = columns.index("class_score") + 1
    return columns[:after] + (RANK_COLUMN,) + columns[after:]


def top_columns(top_k: int) -> tuple[str, ...]:
    """The extra columns of ``--top-k K``: top1_index, top1_label, top1_prob, top2_index, ..."""
    return tuple(f"top{rank}_{part}" for rank in range(1, top_k + 1) for part in ("index", "label", "prob"))


def _cells(row: Row, top_k: int, truth: bool, figures: tuple[str, ...], ranked: bool) -> dict[str, object]:
    """The row's values by column name, the --top-k columns empty where there is no prediction."""
    values: dict[str, object] = {c: getattr(row, c) for c in _with_rank(COLUMNS, ranked) + (TRUTH_COLUMNS if truth else ())}
    values.update({FIGURE_COLUMNS[f]: row.figures.get(f) for f in figures})
    for rank in range(top_k):
        ranked = row.top[rank] if rank < len(row.top) else None
        values[f"top{rank + 1}_index"] = ranked.index if ranked else None
        values[f"top{rank + 1}_label"] = ranked.label if ranked else ""
        values[f"top{rank + 1}_prob"] = ranked.prob if ranked else None
    return values


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
    """Writes rows with fixed columns (``table_columns(top_k, truth, figures, ranked)``) as CSV (a
    header line first) or JSON Lines (one object per row, keys in column order, numbers rounded
    to 6 decimals, empty values as null). Each call writes whole lines and flushes, so a reader
    never sees half a row."""

    def __init__(self, stream: IO[str], table_format: str = "csv", top_k: int = 0, truth: bool = False,
                 figures: tuple[str, ...] = (), ranked: bool = False) -> None:
        self._stream = stream
        self._format = table_format
        self._top_k = top_k
        self._truth = truth
        self._figures = figures
        self._ranked = ranked
        self.columns = table_columns(top_k, truth, figures, ranked)
        self._csv = csv.writer(stream, lineterminator="\n")
        if table_format == "csv":
            self._csv.writerow(self.columns)
        stream.flush()

    def write_records(self, records: Iterable[dict[str, object]]) -> None:
        """Write rows read back by ``read_table`` from a table with the same columns, unchanged."""
        for record in records:
            if self._format == "csv":
                self._csv.writerow([record[c] for c in self.columns])
            else:
                self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()

    def write(self, rows: Iterable[Row]) -> None:
        for row in rows:
            cells = _cells(row, self._top_k, self._truth, self._figures, self._ranked)
            if self._format == "csv":
                self._csv.writerow([_cell(value) for value in cells.values()])
            else:
                self._stream.write(json.dumps({c: _json_value(v) for c, v in cells.items()}) + "\n")
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


def open_table(path: Path) -> IO[str]:
    """Open a predictions table for writing. A file name that is not valid UTF-8 is written
    with \\xNN-style escapes (``table_text``), so the table itself stays valid UTF-8."""
    return open(path, "w", newline="", encoding="utf-8", errors="backslashreplace")


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


def _json_value(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6)
    return None if value == "" else value


SAVE_KINDS = {  # kind -> what its file name adds before the suffix
    "overlay": "",  # heatmap coloured and blended over the image
    "heatmap": ".heatmap",  # the map alone, grayscale 0..255, at the image's size
    "raw": "",  # the map as float32 in [0, 1] at the method's own resolution (.npy)
    "panel": ".panel",  # original | heatmap | overlay with the prediction written below
}
FILE_KINDS = {**SAVE_KINDS, "mosaic": ".mosaic"}  # a volume's slices in one grid, besides --save's kinds
IMAGE_FORMATS = {  # --image-format -> suffix of the overlay, heatmap and panel files
    "png": ".png",  # lossless: our own encoder (Up filter, ISA-L deflate)
    "jpeg": ".jpg",  # quality 90, 4:2:0: a 500x400 overlay in 35 KB where PNG takes 258 KB
    "webp": ".webp",  # lossy quality 80, fastest method: the same overlay in 9 KB
}
JPEG_QUALITY = 90
WEBP_QUALITY, WEBP_METHOD = 80, 0


def output_path(out_dir: Path, relative: PurePosixPath, method: str, kind: str = "overlay", tag: str = "",
                image_format: str = "png") -> Path:
    """``OUT/<relative path>.<method>[.<tag>][.<kind>].<png|jpg|webp|npy>`` for a kind of
    ``FILE_KINDS``; the source suffix
    stays in the name so a.jpg and a.png never collide, and ``tag`` (e.g. 'top2') tells apart
    the classes of one image. ``relative`` never holds '..', so the path stays inside OUT."""
    tagged = f"{method}.{tag}" if tag else method
    suffix = ".npy" if kind == "raw" else IMAGE_FORMATS[image_format]
    return out_dir.joinpath(*relative.parts[:-1], f"{relative.name}.{tagged}{FILE_KINDS[kind]}{suffix}")


THUMBNAIL_DIR = ".thumbs"  # small overlays for the report page, mirroring OUT's tree


def thumbnail_path(out_dir: Path, relative: PurePosixPath, method: str, tag: str = "") -> Path:
    """``OUT/.thumbs/<relative path>.<method>[.<tag>].jpg``: the overlay's name without its kind
    and format, so the page finds it from any of the image's files."""
    tagged = f"{method}.{tag}" if tag else method
    return out_dir.joinpath(THUMBNAIL_DIR, *relative.parts[:-1], f"{relative.name}.{tagged}.jpg")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy via a temporary file and a rename."""
    _write_atomically(path, lambda stream: np.save(stream, array, allow_pickle=False))




def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as sorted, indented JSON via a temporary file and a rename."""
    _write_atomically(path, lambda stream: stream.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"))


def file_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative path and content, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_image(path: Path, pixels: np.ndarray | Drawing, image_format: str = "png") -> None:
    """Write (H, W) grayscale or (H, W, 3) RGB uint8 pixels, whole or as a ``Drawing``'s strips,
    as PNG, JPEG or WebP via a temporary file and a rename, so no reader ever sees a truncated
    file. A PNG is encoded strip by strip as it is drawn; JPEG and WebP need the whole picture."""
    drawing = pixels if isinstance(pixels, Drawing) else _one_strip(pixels)
    if image_format == "png":
        _write_atomically(path, lambda stream: _write_png(stream, drawing))
    else:
        _write_atomically(path, lambda stream: stream.write(_encoded_by_pillow(drawing, image_format)))


def encode_image(pixels: np.ndarray, image_format: str = "png") -> bytes:
    """An image file of (H, W) or (H, W, 3) uint8 pixels in ``image_format`` (see IMAGE_FORMATS)."""
    if image_format == "png":
        return encode_png(pixels)
    return _encoded_by_pillow(_one_strip(pixels), image_format)


def _one_strip(pixels: np.ndarray) -> Drawing:
    height, width = pixels.shape[:2]
    return Drawing(height, width, 3 if pixels.ndim == 3 else 1, [pixels])


def _encoded_by_pillow(drawing: Drawing, image_format: str) -> bytes:
    picture = Image.new("RGB" if drawing.channels == 3 else "L", (drawing.width, drawing.height))
    top = 0
    for strip in drawing.strips:  # pasted as drawn: no numpy copy of the whole picture
        picture.paste(Image.fromarray(np.ascontiguousarray(strip, dtype=np.uint8)), (0, top))
        top += len(strip)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        picture.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return buffer.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG file of (H, W) grayscale or (H, W, 3) RGB uint8 pixels (see ``_write_png``)."""
    buffer = io.BytesIO()
    _write_png(buffer, _one_strip(pixels))
    return buffer.getvalue()


def _write_png(stream: IO[bytes], drawing: Drawing) -> None:
    """Encode ``drawing`` as PNG into ``stream``, one IDAT chunk per strip as it comes.

    Every row uses the PNG "Up" filter (the difference to the row above), then deflate by
    Intel ISA-L at ``PNG_COMPRESS_LEVEL``. On a 500x400 photo overlay that takes 2 ms where
    Pillow takes 14 ms (it tries all five filters on every row, then zlib), for a file of the
    same size; encoding is the largest cost of a run after the model.
    """
    colour_type = 2 if drawing.channels == 3 else 0
    header = struct.pack(">IIBBBBB", drawing.width, drawing.height, 8, colour_type, 0, 0, 0)
    stream.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
    compressor = isal_zlib.compressobj(PNG_COMPRESS_LEVEL)
    above = None  # the last row of the previous strip
    for strip in drawing.strips:
        rows = np.ascontiguousarray(strip, dtype=np.uint8).reshape(len(strip), -1)
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # filter type Up
        # uint8 arithmetic wraps modulo 256, as PNG wants
        if above is None:
            filtered[0, 1:] = rows[0]
        else:
            np.subtract(rows[0], above, out=filtered[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        above = rows[-1].copy()
        _write_idat(stream, compressor.compress(filtered))  # from the array itself: no copy
    _write_idat(stream, compressor.flush())
    stream.write(_chunk(b"IEND", b""))


def _write_idat(stream: IO[bytes], data: bytes) -> None:
    if data:  # the compressor may hold a strip back; an empty chunk would say nothing
        stream.write(_chunk(b"IDAT", data))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


TEMPORARY_NAME = re.compile(r"\..+\.\d+\.\d+\.tmp")  # what _write_atomically writes before its rename


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name unique to this process and thread, opened normally so the file gets the usual
    # permissions (mkstemp would make it private to the owner), and so two writers of one file
    # (a Ray task retried while the first try still runs) never write into the same one.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as stream:
            write(stream)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def remove_temporary_files(folders: Iterable[Path]) -> int:
    """Remove the temporary files that writers killed mid-write left in ``folders`` (a replica
    killed by the system, a run killed with SIGKILL); returns how many. Only for a run that holds
    OUT and has no write under way."""
    removed = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not there: nothing was written into it
            continue
        for entry in entries:
            if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed
