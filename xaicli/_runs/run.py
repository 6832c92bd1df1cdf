"""``xaicli.run``: the whole ``xai run`` (the lock, earlier outputs, the decisions, the engine, the
record, the gates, the page and the summary) as a function that returns what happened instead of
printing it. The command line is a shell around it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .._budget import return_large_blocks_to_the_system
from .._engines import Watch, check_engine
from .._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_REQUIREMENT_UNMET, EXIT_SOME_FAILED, UsageError
from .._evaluation.faithfulness import LABEL_FIGURES, failed_requirements, parse_requirements
from .._inputs.discover import IMAGE_SUFFIXES, InputImage
from .._inputs.series import grouped_series
from .._models.files import check_model_path
from .._outputs.naming import MANIFEST_NAME, THUMBNAIL_DIR, table_path
from .._outputs.report import write_report, write_summary
from .._storage import Store, as_location, check_store
from .config import RunConfig
from .lock import output_lock, store_lock
from .options import as_fields, existing_mode
from .regions import check_box_on_first_image

if TYPE_CHECKING:
    from .decisions import Prepared
    from .record import Record


@dataclass(frozen=True)
class RunSummary:
    """What a run did, from its record in memory (``run.json`` says the same).

    Attributes:
        out_dir: the output folder (its URL, for one on a store).
        status: 'complete', 'stopped by REASON' (a signal's name, 'the first failure (--fail-fast)'),
            or 'stopped: WHAT at PATH' when the output folder took no more files (disk full, quota
            exceeded, read-only, not writable, or 'the output folder OUT vanished').
        images: images found (a volume's slices each count).
        counts: images by outcome: explained, failed, skipped (outputs already there), resumed
            (finished by the interrupted run ``resume`` continued).
        seconds: from the first batch to the last.
        first_failure: 'name: reason' of the first image that failed, '' when none did.
        accuracy: with ``true_labels``: images, correct, accuracy, classes, confusion; else None.
        metrics: method -> figure -> mean over the images (``metrics``, ``truth_masks``/``truth_boxes``).
        unmet: the ``require`` gates not met, one line each.
        table: where the predictions table went (its URL on a store); None for standard output.
        report: the page written (``report``; its URL on a store), or None.
        summary: the Markdown summary written (``summary``), or None.
        engine: 'local' or 'ray'; ``engine_details``: what the engine reports of itself (Ray's pool).
        space_needed: a run stopped because the output folder took no more files ('stopped: disk
            full at PATH'): about how many bytes the images not done need, at the bytes a done
            image's files took in the folder; None otherwise.
        manifest_written: False when even ``run.json`` could not be written (or the folder vanished).
    """

    out_dir: Path | str
    status: str
    images: int
    counts: dict[str, int]
    seconds: float
    first_failure: str = ""
    accuracy: dict[str, Any] | None = None
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    unmet: tuple[str, ...] = ()
    table: Path | str | None = None
    report: Path | str | None = None
    summary: Path | None = None
    engine: str = "local"
    engine_details: dict[str, Any] = field(default_factory=dict)
    space_needed: int | None = None
    manifest_written: bool = True

    @property
    def done(self) -> int:
        """Images with an outcome (the others were not reached: a stopped run)."""
        return sum(self.counts.values())

    @property
    def storage_stopped(self) -> bool:
        """The run stopped because the output folder took no more files (``status`` says why)."""
        return self.status.startswith("stopped: ")

    @property
    def exit_status(self) -> int:
        """What ``xai run`` exits with: 128 + the signal that stopped the run, 3 for a gate not met,
        1 when an image failed or the output folder took no more files, else 0."""
        if self.storage_stopped:
            return EXIT_SOME_FAILED
        reason = self.status.removeprefix("stopped by ").split(" ", 1)[0]
        if self.status != "complete" and reason.startswith("SIG") and reason in signal.Signals.__members__:
            return 128 + signal.Signals[reason].value
        if self.status != "complete" and self.status != "stopped by the first failure (--fail-fast)":
            return EXIT_INTERRUPTED
        if self.unmet:
            return EXIT_REQUIREMENT_UNMET
        return EXIT_SOME_FAILED if self.counts.get("failed") else EXIT_OK


def run(model: str | os.PathLike, inputs: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
        *, watch: Watch | None = None, stop: Callable[[], str | None] | None = None, **options: Any) -> RunSummary:
    """Explain every image in ``inputs`` with ``model`` and write the run to ``out``, as ``xai run``.

    Args:
        model: a model file or SavedModel folder.
        inputs: image files and folders (searched recursively, in sorted order).
        out: the output folder: overlays mirroring the inputs, the predictions table, ``run.json``
            and the page.
        watch: told of the run's progress and notes (the command line's progress bar is one).
        stop: asked before each batch; a reason it gives (e.g. 'SIGINT') stops the run after the
            batches under way, as a signal does ``xai run``; continue with ``resume=True``.
        **options: ``xai run``'s options in snake_case (``methods``, ``layer``, ``batch_size``,
            ``save``, ``metrics``, ``require``, ``engine``, ...); for outputs already in ``out``,
            ``overwrite=True``, ``skip_existing=True`` or ``resume=True``.

    Returns:
        The counts, figures, gates and files of the run; ``exit_status`` is what ``xai run`` exits with.

    Raises:
        UsageError: a bad option, no images, outputs in the way, or ``out`` in use by another run.
        ModelError: the model cannot be loaded or explained.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise UsageError("xaicli.run takes a model file (run.json records its SHA-256 and Ray's replicas load it); "
                         "save the model first, or explain images of a model in memory with xaicli.Explainer")
    options = dict(options)
    existing = existing_mode(options) if not options.get("existing") else options.pop("existing")
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    locations, out_location = tuple(as_location(p) for p in paths), as_location(out)
    with _spool(isinstance(entry, str) for entry in (*locations, out_location)) as spool:
        out_url = out_location if isinstance(out_location, str) else None
        config = RunConfig(**as_fields({**options, "model": model}, RunConfig), inputs=locations,
                           out_dir=spool / SPOOL_OUT if out_url else out_location, out_url=out_url, spool=spool,
                           existing=existing)
        return run_config(config, watch or Watch(), stop or (lambda: None))


SPOOL_OUT = "out"  # the spool's folder of an output folder on a store: its files before their put


@contextlib.contextmanager
def _spool(on_store: Iterable[bool]) -> Iterator[Path | None]:
    """A local folder for a run with inputs or outputs on a store (under TMPDIR), removed after; None otherwise."""
    if not any(on_store):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="xai-spool-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_config(config: RunConfig, watch: Watch, stop: Callable[[], str | None]) -> RunSummary:
    """``run`` of a checked configuration."""
    store = config.store
    if store is None:
        with output_lock(config.out_dir, watch.note):
            return _locked_run(config, watch, stop)
    check_store(store.url)
    with store_lock(store, watch.note):
        _fetch_earlier_run(config, store)
        summary = _locked_run(config, watch, stop)
        summary = replace(summary, out_dir=store.url, table=summary.table and config.shown(summary.table))
        if summary.report is None:
            return summary
        try:
            store.put(summary.report)
        except OSError as exc:
            watch.note(f"the page was not put on the store: {exc.strerror}")
            return replace(summary, report=None)
        return replace(summary, report=store.url_of(summary.report))


def _fetch_earlier_run(config: RunConfig, store: Store) -> None:
    """An output folder on a store: the earlier run's ``run.json`` and table into the spool, where
    the checks of earlier outputs and ``--resume`` read them."""
    for path in (config.out_dir / MANIFEST_NAME, config.kept_table_path):
        store.fetch(path)


def _locked_run(config: RunConfig, watch: Watch, stop: Callable[[], str | None]) -> RunSummary:
    check_model_path(config.model)
    check_engine(config)
    total = sum(1 for _ in config.images())
    if not total:
        raise UsageError(f"no images found in {', '.join(map(str, config.inputs))} "
                         f"(looked for {' '.join(sorted(IMAGE_SUFFIXES))})")
    watch.loading(config.model)
    from .._engines import run as run_engine
    from .decisions import prepare
    from .record import Record
    from .resume import check_existing

    prepared = prepare(config)
    images = _inputs_for(config, prepared)
    if prepared.info.takes_volumes:  # a DICOM series' files are one volume
        total = sum(1 for _ in images())
    check_existing(prepared.config, images(), prepared.output_tags, prepared.output_exists)
    check_box_on_first_image(config.region, images(), config.max_pixels, config.intensity)
    watch.note(f"{total} images; {_choices(prepared)}")
    _pillow_pixel_limit(config.max_pixels)
    return_large_blocks_to_the_system()
    record = Record(prepared, stop)
    watch.begin(total)
    total, first_failure = _counted(run_engine(prepared, images(), record, watch), total)
    watch.end()
    return _summary(config, record, total, first_failure, watch)




def _inputs_for(config: RunConfig, prepared: Prepared) -> Callable[[], Iterator[InputImage]]:
    """What the model explains, streamed anew by each call: the images, or for a 3-D model the
    volumes, each folder's DICOM series grouped into one input."""
    if prepared.info.takes_volumes:
        return lambda: grouped_series(config.images())
    return config.images


def _choices(prepared: Prepared) -> str:
    """'layer conv5 (Conv2D; auto: ...); preprocess unit (...)': the run's decisions, in one line."""
    layer = prepared.layer
    target = f"layer {layer.path} ({layer.type_name}; {prepared.layer_reason})" if layer else "input gradients"
    info = prepared.info
    explained = f"; output {info.head_path} ({info.output_reason})" if len(info.outputs) > 1 else ""
    from .rows import threshold

    kind = f"; {info.kind} ({info.kind_reason})"
    if info.kind == "segmentation":
        kind += {"predicted": ", explaining each class in the predicted mask over its pixels",
                 "truth": ", explaining each class in the truth mask over its pixels"}.get(
            prepared.config.region, f", explaining each class predicted inside {prepared.config.region} over the box")
    elif prepared.dynamic_targets:
        kind += f", explaining each label at or above {threshold(prepared):g}"
    return f"{target}{explained}{kind}; preprocess {prepared.preprocess} ({prepared.preprocess_reason})"


def _counted(results: Iterator, total: int) -> tuple[int, str]:
    """Drive the engine to the end: the images found (a volume's slices count once it is read) and
    the first failure ('name: reason')."""
    first_failure = ""
    for result in results:
        part = result.item.part
        if part and part.position == 0 and part.count > 1:
            total += part.count - 1
        if result.outcome == "failed" and not first_failure:
            first_failure = f"{result.item.name}: {next(r.error for r in result.rows if r.error)}"
    return total, first_failure


def _summary(config: RunConfig, record: Record, total: int, first_failure: str, watch: Watch) -> RunSummary:
    """The run's summary from its record; the gates checked, the page and the Markdown summary written."""
    metrics = record.means.as_dict(config.methods, config.figures) if config.figures else {}
    accuracy = record.tally.as_dict() if config.true_labels else None
    labelled = {name: (accuracy or {}).get(name) for name in LABEL_FIGURES}
    unmet = tuple(failed_requirements(parse_requirements(config.require), metrics, labelled) if config.require else ())
    # A folder that takes no more files gets no page; --resume writes it.
    report = _page(config) if config.report and not record.lost else None
    summary = (write_summary(config.out_dir, config.summary, config.out_url)
               if config.summary is not None and not record.lost else None)
    return RunSummary(out_dir=config.out_dir, status=record.status, images=total, counts=dict(record.counts),
                      seconds=record.seconds, first_failure=first_failure, accuracy=accuracy, metrics=metrics,
                      unmet=unmet, table=config.predictions_path, report=report, summary=summary,
                      engine=record.engine, engine_details=dict(record.engine_details),
                      space_needed=(_space_needed(config.out_dir, record, total)
                                    if record.lost and config.store is None else None),
                      manifest_written=record.manifest_written)


def _page(config: RunConfig) -> Path:
    """``write_report`` of the run; for an output folder on a store, in its spool."""
    return write_report(config.out_dir) if config.store is None else _page_in_spool(config.store)


def _page_in_spool(store: Store) -> Path:
    """``write_report`` in the spool of an output folder on a store, from its thumbnails: those
    drawn here are kept in the spool, the others (drawn on other nodes, or by an earlier run)
    fetched first; the page is the caller's to put."""
    store.fetch_missing(THUMBNAIL_DIR)
    return write_report(store.spool)


def report_on_store(url: str, summary: Path | None = None) -> tuple[str, Path | None]:
    """``xai report`` of a run whose output folder is on a store: its ``run.json``, table and
    thumbnails fetched into a spool, the page written there and put back. Returns the page's URL
    and the summary written (or None)."""
    check_store(url)
    with _spool([True]) as spool:
        store = Store(url, spool / SPOOL_OUT)
        if not store.fetch(store.spool / MANIFEST_NAME):
            raise UsageError(f"{url} holds no run to report on (no {MANIFEST_NAME}); give the -o of an `xai run`")
        try:
            options = json.loads((store.spool / MANIFEST_NAME).read_text(encoding="utf-8"))["options"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"{url}/{MANIFEST_NAME} is not a run's record; give the -o of an `xai run`") from None
        store.fetch(table_path(store.spool, str(options.get("table_format", "csv")), options.get("predictions")))
        page = _page_in_spool(store)
        store.put(page)
        written = write_summary(store.spool, summary, url) if summary is not None else None
        return store.url_of(page), written


def _space_needed(out_dir: Path, record: Record, total: int) -> int:
    """Bytes the images not done yet need, at the bytes per image that the folder's files take
    now (every file under it, over the images whose files are there)."""
    with_files = sum(record.counts[outcome] for outcome in ("explained", "skipped", "resumed"))
    left = max(0, total - sum(record.counts.values()))
    size = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file()) if out_dir.is_dir() else 0
    return round(size / max(with_files, 1) * left)


def _pillow_pixel_limit(max_pixels: int) -> None:
    """Pillow refuses images over twice its own limit before ours is checked; ``max_pixels`` is
    the user's decision, so Pillow's guard follows it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
