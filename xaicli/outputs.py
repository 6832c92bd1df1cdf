"""Files a run writes: overlay PNGs (atomically) and the predictions table."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 1  # fastest zlib level: ~3x faster to encode than 6, files ~15% larger
MANIFEST_NAME = "run.json"


@dataclass(frozen=True)
class Row:
    """One line of the predictions table: one image explained by one method.

    ``status`` is ``ok``, ``error``, or ``skipped`` (``--skip-existing`` found every output);
    on ``error`` and ``skipped`` the prediction fields are ``None``.
    Probabilities are in [0, 1]; ``class_score`` is the explained pre-activation score (logit).
    """

    input: str
    status: str
    error: str
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


COLUMNS = tuple(f.name for f in fields(Row))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


TABLE_FORMATS = ("csv", "jsonl")


class PredictionsWriter:
    """Writes rows with fixed columns as CSV (a header line first) or JSON Lines (one object
    per row, keys in column order, numbers rounded to 6 decimals, empty values as null).
    Each call writes whole lines and flushes, so a reader never sees half a row."""

    def __init__(self, stream: IO[str], table_format: str = "csv") -> None:
        self._stream = stream
        self._format = table_format
        self._csv = csv.writer(stream, lineterminator="\n")
        if table_format == "csv":
            self._csv.writerow(COLUMNS)
        stream.flush()

    def write(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if self._format == "csv":
                self._csv.writerow([_cell(getattr(row, c)) for c in COLUMNS])
            else:
                self._stream.write(json.dumps({c: _json_value(getattr(row, c)) for c in COLUMNS}) + "\n")
        self._stream.flush()


def _json_value(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6)
    return None if value == "" else value


SAVE_KINDS = {
    "overlay": ".png",  # heatmap coloured and blended over the image
    "heatmap": ".heatmap.png",  # the map alone, grayscale 0..255, at the image's size
    "raw": ".npy",  # the map as float32 in [0, 1] at the method's own resolution
    "panel": ".panel.png",  # original | heatmap | overlay with the prediction written below
}


def output_path(out_dir: Path, relative: PurePosixPath, method: str, kind: str = "overlay") -> Path:
    """``OUT/<relative path>.<method><suffix of kind>``; the source suffix stays in the name so
    a.jpg and a.png never collide. ``relative`` never holds '..', so the path stays inside OUT."""
    return out_dir.joinpath(*relative.parts[:-1], f"{relative.name}.{method}{SAVE_KINDS[kind]}")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy via a temporary file and a rename."""
    _write_atomically(path, lambda stream: np.save(stream, array, allow_pickle=False))


def write_gray_png(path: Path, gray: np.ndarray) -> None:
    """Write (H, W) uint8 as a grayscale PNG via a temporary file and a rename."""
    _write_atomically(path, lambda stream: Image.fromarray(gray, mode="L").save(
        stream, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


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


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write (H, W, 3) uint8 as PNG via a temporary file and a rename, so no reader ever sees
    a truncated file."""
    _write_atomically(path, lambda stream: Image.fromarray(rgb).save(stream, format="PNG",
                                                                     compress_level=PNG_COMPRESS_LEVEL))


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name unique to this process and thread, opened normally so the file gets the usual
    # permissions (mkstemp would make it private to the owner).
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temp, "wb") as stream:
            write(stream)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
