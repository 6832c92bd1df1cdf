"""The run's record as results come in, whatever the engine: the table, counts, accuracy,
figures and ``run.json``."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import keras
import tensorflow as tf

from .. import __version__
from .._errors import UsageError, storage_failure
from .._evaluation.faithfulness import Means, figure_from_cell
from .._evaluation.truth import LabelTally, Tally, predicted_name
from .._inputs.discover import InputImage
from .._outputs.naming import MANIFEST_NAME, THUMBNAIL_DIR
from .._outputs.table import FIGURE_COLUMNS, PredictionsWriter, Row, Tee, open_table, table_text
from .._outputs.writers import remove_temporary_files, write_json
from .config import option_values
from .decisions import VOLUME_INPUT, Prepared, background_class
from .resume import previous_rows
from .rows import table_layout, threshold, unit_names


@dataclass(frozen=True)
class ImageResult:
    """The rows one image produced (one per method and target), or the rows an interrupted
    run had recorded for it (``--resume``)."""

    item: InputImage
    rows: tuple[Row, ...]
    carried: tuple[dict[str, object], ...] = ()
    lost: str = ""  # its files could not be written ('disk full at PATH'): no rows, the run stops

    @property
    def ok(self) -> bool:
        """Explained now or by the resumed run, or skipped because its outputs were already there."""
        return all(row.status in ("ok", "skipped") for row in self.rows)

    @property
    def skipped(self) -> bool:
        return bool(self.rows) and all(row.status == "skipped" for row in self.rows)

    @property
    def outcome(self) -> str:
        """What happened to the image: explained, failed, skipped or resumed."""
        return "resumed" if self.carried else "skipped" if self.skipped else "explained" if self.ok else "failed"


OUTCOMES = ("explained", "failed", "skipped", "resumed")
TABLE_PUT_SECONDS = 60  # an output folder on a store gets the table this often while the run goes


class Record:
    """The run's predictions table and counts as results come in, whatever engine explains the
    images: rows in input order, the resumed run's rows carried over, outcomes counted, the
    accuracy tallied and the figures averaged for ``run.json``. Made by whoever starts the run,
    opened by the engine when it is ready to explain, and read by the starter afterwards."""

    def __init__(self, prepared: Prepared, stop: Callable[[], str | None] = lambda: None) -> None:
        """``stop`` gives a reason to stop (e.g. 'SIGINT') or None; it is asked before each batch."""
        self._prepared = prepared
        self._writer: PredictionsWriter | None = None
        self._stop = stop
        self.carried: dict[str, list[dict[str, object]]] = {}  # the resumed run's rows of images not reached yet, by input
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.folders: set[PurePosixPath] = set()  # of the inputs, relative: OUT mirrors them
        self.tally: Tally | LabelTally = (LabelTally(unit_names(prepared)) if prepared.info.kind == "multilabel"
                                          else Tally())
        self.means = Means.empty()
        self.status = "complete"
        self.lost = ""  # why the output folder takes no more files ('disk full at PATH'); '' while it does
        self.manifest_written = True  # run.json says how the run ended (False: even that could not be written)
        self._folder: tuple[int, int] | None = None  # the output folder's device and inode, to notice it vanish
        self.engine = ""
        self.engine_details: dict[str, object] = {}  # what run.json records under the engine's name
        self.seconds = 0.0  # from opening to closing
        self._stream = None  # the table's stream, flushed before the table is put on a store
        self._table_put = time.monotonic()  # when the table was last put on a store

    @contextlib.contextmanager
    def opened(self, engine: str) -> Iterator[Record]:
        """Open the run's table and write ``run.json`` ('running'); on leaving, the table is complete
        and ``run.json`` records how the run ended, with counts, figures and timing. ``engine``
        names the loop that explains the images, for ``run.json``."""
        config = self._prepared.config
        started = time.monotonic()
        self.engine = engine
        layout = table_layout(self._prepared, config, config.table_format, self._prepared.truth is not None,
                              config.figures)
        self.carried = previous_rows(config, layout.columns)
        try:
            config.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(config.out_dir / MANIFEST_NAME, manifest(self._prepared, dict.fromkeys(OUTCOMES, 0), "running",
                                                                0.0, engine=engine))
            self._put(config.out_dir / MANIFEST_NAME)
            table = config.predictions_path
            stream = open_table(table) if table is not None else _on_stdout_and_kept(config.kept_table_path)
        except OSError as exc:
            raise UsageError(f"cannot write to output folder {config.out_url or config.out_dir}: "
                             f"{exc.strerror or exc}") from None
        self._folder = _identity(config.out_dir)
        with stream as table_stream:
            self._stream = table_stream
            self._writer = PredictionsWriter(table_stream, layout)
            yield self
            self._close()
        self._stream = None
        self._put_table()
        self.seconds = time.monotonic() - started
        self._write_manifest()

    def _put(self, path: Path) -> None:
        """An output folder on a store gets the spool's ``path`` (the table, ``run.json``) whole,
        kept in the spool to be written on and put again."""
        store = self._prepared.config.store
        if store is not None and store.holds(path):
            store.put(path, keep=True)

    def _put_table(self) -> None:
        """The table as it stands, on the store (at the end, and every ``TABLE_PUT_SECONDS`` so
        that a run killed outright leaves its rows for ``--resume``)."""
        self._table_put = time.monotonic()
        if self._prepared.config.store is None or self.lost:
            return
        try:
            if self._stream is not None:  # still being written
                self._stream.flush()
            self._put(self._prepared.config.kept_table_path)
        except OSError as exc:
            if storage_failure(exc) is None:
                raise
            self._lose(storage_failure(exc))

    def _write_manifest(self) -> None:
        """``run.json`` as the run ended; not when the output folder has vanished (writing would
        make it anew), nor when it cannot take even that (``manifest_written`` says so)."""
        if self._folder_gone():
            self.manifest_written = False
            return
        try:
            write_json(self._prepared.config.out_dir / MANIFEST_NAME,
                       manifest(self._prepared, self.counts, self.status, self.seconds, self.tally, self.means,
                                self.engine, self.engine_details))
            self._put(self._prepared.config.out_dir / MANIFEST_NAME)
        except OSError as exc:
            if storage_failure(exc) is None:
                raise
            self.manifest_written = False

    def add(self, result: ImageResult) -> None:
        """Write the image's rows (or the resumed run's) and count them. An image whose files or
        rows the output folder could not take stops the run (``stopping``): it and every image
        after it get no rows, which ``--resume`` explains again."""
        if self.lost:
            return
        if result.lost:
            self._lose(result.lost)
            return
        try:
            if result.carried:
                self._writer.write_records(result.carried)
            else:
                self._writer.write(result.rows)
        except OSError as exc:
            reason = storage_failure(exc)
            if reason is None:
                raise
            self._lose(reason)
            return
        if time.monotonic() - self._table_put > TABLE_PUT_SECONDS:
            self._put_table()
        self.carried.pop(table_text(result.item.name), None)
        self.folders.add(result.item.relative.parent)
        self.counts[result.outcome] += 1
        self.tally.add(*_labelled(result, self._prepared.info.kind == "multilabel"))
        _add_figures(self.means, result)

    def stopping(self) -> bool:
        """Whether to start no more work: the output folder takes no more files (full, read-only,
        or gone: checked here by its identity), the caller's ``stop`` gave a reason (e.g.
        'SIGINT'), or ``--fail-fast`` and an image failed. The reason goes into ``status``."""
        if not self.lost and self._folder_gone():
            self._lose(f"the output folder {self._prepared.config.out_dir} vanished")
        if self.lost:
            return True
        reason = self._stop() or ("the first failure (--fail-fast)"
                                  if self._prepared.config.fail_fast and self.counts["failed"] else None)
        if reason:
            self.status = f"stopped by {reason}"
        return reason is not None

    def _lose(self, reason: str) -> None:
        self.lost = reason
        self.status = f"stopped: {reason}"

    def _folder_gone(self) -> bool:
        """The output folder was removed (or replaced by another) since the run opened it."""
        return self._folder is not None and _identity(self._prepared.config.out_dir) != self._folder

    def _close(self) -> None:
        """A stopped run keeps the resumed run's rows of the images it did not reach (as many as the
        output folder takes). A complete run, with no write under way, removes what writers killed
        mid-write left in its folders."""
        if self.status != "complete":
            try:
                self._writer.write_records(record for rows in self.carried.values() for record in rows)
            except OSError as exc:
                if storage_failure(exc) is None:
                    raise
            return
        out_dir = self._prepared.config.out_dir
        remove_temporary_files(folder for relative in self.folders
                               for folder in (out_dir / relative, out_dir / THUMBNAIL_DIR / relative))


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of ``folder``; None when it is not there."""
    try:
        status = os.stat(folder)
    except OSError:
        return None
    return status.st_dev, status.st_ino


@contextlib.contextmanager
def _on_stdout_and_kept(kept: Path) -> Iterator[Tee]:
    """The table on standard output, and the copy kept in OUT for the page and ``--resume``."""
    with open_table(kept) as copy:
        yield Tee(sys.stdout, copy)


def _add_figures(means: Means, result: ImageResult) -> None:
    """The figures of an explained image's rows (or of the rows a resumed run carried)."""
    for row in result.rows:
        if row.status == "ok":
            means.add(row.method, row.figures)
    for record in result.carried:
        if record.get("status") == "ok":
            means.add(str(record["method"]), {name: figure_from_cell(record.get(column))
                                              for name, column in FIGURE_COLUMNS.items() if column in record})


def _labelled(result: ImageResult, several: bool) -> tuple[str, str | None]:
    """(true label, prediction) of an explained image, for the accuracy: the predicted class, or
    with ``several`` (a multi-label model) the positive labels ';'-joined ('' for none); ('',
    None) for an image that was not explained."""
    if result.rows and result.rows[0].status == "ok":
        row = result.rows[0]
        return row.true_label, ";".join(row.positive) if several else predicted_name(row.pred_label, row.pred_index)
    if result.carried and result.carried[0].get("status") == "ok":
        record = result.carried[0]
        predicted = (str(record.get("positive") or "") if several
                     else predicted_name(str(record.get("pred_label") or ""), record.get("pred_index")))
        return str(record.get("true_label") or ""), predicted
    return "", None


def manifest(prepared: Prepared, counts: dict[str, int], status: str, seconds: float,
             tally: Tally | None = None, means: Means | None = None, engine: str = "local",
             engine_details: dict[str, object] | None = None) -> dict:
    """What ``OUT/run.json`` records: versions, the model's SHA-256, what was resolved, every
    option's value, the engine (and, under its name, what it reports of itself: Ray's pool), how
    the run ended, counts per outcome, the accuracy and confusion matrix (with --true-labels) and
    timing."""
    config = prepared.config
    accuracy = {"accuracy": (tally or Tally()).as_dict()} if prepared.truth is not None else {}
    figures = {"metrics": (means or Means.empty()).as_dict(config.methods, config.figures)} if config.figures else {}
    return {
        **accuracy,
        **figures,
        "tool": {"name": "xaicli", "version": __version__},
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "model": prepared.model_file,
        "resolved": {
            "layer": prepared.layer.path if prepared.layer else None,
            "layer_reason": prepared.layer_reason,
            "attention_layers": list(prepared.info.attention_layers),
            "explained_output": prepared.info.head_path,
            "output_choice": prepared.info.output_reason,
            "kind": prepared.info.kind,
            "kind_reason": prepared.info.kind_reason,
            "final_activation": prepared.info.final_activation,
            "classes": prepared.info.num_classes,
            **({"threshold": threshold(prepared)} if prepared.info.kind == "multilabel" else {}),
            **({"sign": prepared.config.sign or "positive"} if prepared.info.kind == "regression" else {}),
            **({"background": background_class(prepared.config, prepared.labels, prepared.info),
                "region": prepared.config.region} if prepared.info.kind == "segmentation" else {}),
            **({"volumes": {"input_size": list(prepared.info.input_size), "axes": VOLUME_INPUT,
                            "resize": prepared.config.resize, "intensity": prepared.config.intensity + " over each volume"}}
               if prepared.info.takes_volumes else {}),
            "preprocess": prepared.preprocess,
            "preprocess_reason": prepared.preprocess_reason,
            "target_class": prepared.target_class,
        },
        "options": option_values(config),
        "engine": engine,
        **({engine: engine_details} if engine_details else {}),
        "status": status,
        "counts": {"images": sum(counts.values()), **counts},
        "seconds": round(seconds, 3),
    }
