"""The local engine: decode ahead in threads, explain a batch, render and write while the next
batch computes. Yields one result per image, in input order; never prints. A Ray replica runs
the same loop over its share of the inputs."""

from __future__ import annotations

import functools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import tensorflow as tf
from PIL import Image

from .._budget import MemoryBudget, render_estimate
from .._errors import ImageError, first_line
from .._evaluation.faithfulness import (PERTURBATION_METRICS, CurveJob, blurred, curve_areas, energy_in, iou, perturbed,
                                        pixel_order, pointing_hit)
from .._evaluation.truth import MaskError, predicted_name
from .._explain.explainer import BatchExplanation
from .._explain.targets import Target
from .._inputs.discover import InputImage
from .._inputs.geometry import View, drawn_picture, output_size, shown_at, to_model_input
from .._inputs.raster import PICTURE_BYTES_PER_PIXEL, decode_bytes, open_image
from .._inputs.stacks import StackCache, parse_slices
from .._outputs.mosaic import Sheet, tile_size
from .._outputs.naming import mosaic_path, planned_outputs, wants_mosaic
from .._outputs.naming import output_path, thumbnail_path
from .._outputs.render import Shrunk, draw_kind, overlay, upsample
from .._outputs.report import thumbnail_size
from .._outputs.table import Row, table_text
from .._outputs.writers import write_image, write_npy
from .._runs.config import RunConfig, default_workers
from .._runs.decisions import Prepared
from .._runs.record import ImageResult, Record
from .._runs.rows import caption, class_label, error_row, explained_row, predicted_class
from . import Watch

FILES_AHEAD = 3  # files split into their images (volumes read whole) ahead of the one being explained
THUMBNAIL = "thumbnail"  # the report page's small overlay, written beside the --save kinds
T = TypeVar("T")
Carried = dict[str, list[dict[str, object]]]  # --resume: the earlier run's rows of finished images, by input


def run(prepared: Prepared, items: Iterable[InputImage], record: Record | None = None,
        budget: MemoryBudget | None = None, watch: Watch | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` in order, writing the files under the output folder, the predictions
    table (to its file or standard output) and ``run.json`` (at the start, then at the end).

    The results go into ``record`` (by default a new one that never stops); its ``stop`` is asked
    before each batch, and when it gives a reason (e.g. 'SIGINT') the run finishes the batches under way, keeps the rows of a resumed run it did not reach, records
    the reason in ``run.json`` and ends. ``--fail-fast`` ends it the same way after a failure.
    Decoded originals and the work under way are bounded by ``budget`` (by default one of
    ``--memory-budget``), whose accounting the caller can read afterwards. ``watch`` is told
    of each batch's stages and progress.
    """
    record = record or Record(prepared)
    with record.opened("local"):
        for result in explained(prepared, items, record.carried, record.stopping, budget, watch or Watch()):
            record.add(result)
            yield result


def explained(prepared: Prepared, items: Iterable[InputImage], carried: Carried,
              stopping: Callable[[], bool] = lambda: False,
              budget: MemoryBudget | None = None, watch: Watch | None = None) -> Iterator[ImageResult]:
    """Decode, explain, render and write the files of ``items`` (whole files: a volume is split
    into its slices here), yielding each image's result in order; the table is the caller's.

    ``carried`` (read, and dropped from for volumes explained again) lets ``--resume`` pass by
    the images an earlier run finished; ``stopping`` is asked before each batch, and when true
    the batches under way are finished and no more are started. ``watch`` is told how it goes.
    """
    config = prepared.config
    watch = watch or Watch()
    budget = budget or MemoryBudget(config.memory_budget * 2**20)
    stacks = StackCache(budget, prepared.intensity, parse_slices(config.slices), config.slice_axis, config.max_pixels)
    threads = config.workers or default_workers()
    # Decoding and rendering have pools of their own: a decode waiting for memory must never
    # queue ahead of the render that would free it. Volumes are read whole, a few files ahead, by
    # a thread of their own while the slices before them are explained.
    with (ThreadPoolExecutor(threads, thread_name_prefix="xai-read") as readers,
          ThreadPoolExecutor(threads, thread_name_prefix="xai-write") as writers,
          ThreadPoolExecutor(1, thread_name_prefix="xai-split") as splitter):
        workers = _Workers(writers, budget, stacks)
        parts = chain.from_iterable(_read_ahead(splitter, lambda item: list(stacks.split([item])), items, FILES_AHEAD))
        decoded = _read_ahead(readers, lambda entry: _decode(prepared, *entry, carried, workers),
                              _passable(config, parts, carried), 2 * config.batch_size)
        mosaics = _Mosaics(prepared)
        pending: deque[list[_Pending]] = deque()
        warm = False  # a batch has been explained: the compiled steps are ready
        for batch in batched(decoded, config.batch_size):
            if stopping():
                break
            batch_watch = _BatchWatch(watch, batch, first=not warm)
            pending.append(_explain_batch(prepared, batch, workers, batch_watch))
            if batch_watch.explained and not warm:
                warm = True
                watch.warmed_up()
            # The previous batch's PNGs were encoding while this batch computed.
            if len(pending) > 1:
                yield from _finish(prepared, pending.popleft(), mosaics, stacks)
        while pending:
            yield from _finish(prepared, pending.popleft(), mosaics, stacks)


@dataclass(frozen=True)
class _Workers:
    """Where rendering happens, the memory it shares with decoding, and the volumes whose
    slices are under way."""

    pool: ThreadPoolExecutor
    budget: MemoryBudget
    stacks: StackCache


@dataclass(frozen=True)
class _Decoded:
    item: InputImage
    image: Image.Image | None  # the RGB original at the output size; None when not kept (read again)
    model_input: np.ndarray | None  # (h, w, c) float32
    view: View | None = None  # how model_input was cut from image, at the output size
    kept: int = 0  # bytes of ``image`` the memory budget accounts
    shown_size: tuple[int, int] = (0, 0)  # (height, width) the outputs are drawn at
    original_size: tuple[int, int] = (0, 0)  # (height, width) of the image as read
    decode_bytes: int = 0  # what reading the original again holds at its peak
    error: str = ""
    skipped: bool = False  # --skip-existing and every output is already there
    carried: tuple[dict[str, object], ...] = ()  # --resume: the earlier run's rows, outputs all there
    note: str = ""  # what the user should know about how the image was read


@dataclass(frozen=True)
class _Write:
    """The files of one image, method and explained class, being written in the pool."""

    method: str
    target: Target  # what the map explains: its tag names the files, its rank goes in the row
    explanation: BatchExplanation  # of the batch, for this target
    path: Path  # the first --save kind, named in the table
    figures: Figures  # --metrics deletion and insertion of this map
    done: Future[list[_Outcome]]  # the image's render: one outcome per write
    index: int  # this write's place in that list


@dataclass(frozen=True)
class _Pending:
    item: InputImage
    error: str
    note: str = ""
    skipped: bool = False
    carried: tuple[dict[str, object], ...] = ()
    index: int = -1
    writes: tuple[_Write, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    """One write of an image's render: None or the error that kept it from being written, and
    the slice's mosaic tile when its file gets a mosaic."""

    error: Exception | None
    tile: np.ndarray | None = None
    figures: Figures = field(default_factory=dict)  # pointing, energy, iou against the object


def _passable(config: RunConfig, items: Iterable[InputImage],
              carried: dict[str, list[dict[str, object]]]) -> Iterator[tuple[InputImage, bool]]:
    """Each item, and whether ``--skip-existing`` or ``--resume`` may pass it by. The parts of a
    volume are passed by together or not at all, since its mosaic shows every slice: when some
    part is missing, the earlier rows of the others are dropped and the whole file is explained."""
    for group in _by_file(items):
        if config.existing not in ("skip", "resume") or group[0].part is None:
            yield from ((item, True) for item in group)
            continue
        whole = all(all(p.exists() for p in planned_outputs(config, part))
                    and (config.existing == "skip" or table_text(part.name) in carried) for part in group)
        for part in group:
            if not whole:
                carried.pop(table_text(part.name), None)
            yield part, whole


def _by_file(items: Iterable[InputImage]) -> Iterator[list[InputImage]]:
    """``items`` in lists: the parts of one file together, any other item alone."""
    group: list[InputImage] = []
    for item in items:
        if group and not (item.part and item.path == group[0].path):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _decode(prepared: Prepared, item: InputImage, may_pass: bool, carried: dict[str, list[dict[str, object]]],
            workers: _Workers) -> _Decoded:
    info = prepared.info
    if item.error:
        return _Decoded(item, None, None, error=item.error)
    earlier = carried.get(table_text(item.name), ()) if may_pass else ()
    if earlier or (prepared.config.existing == "skip" and may_pass):
        if all(p.exists() for p in planned_outputs(prepared.config, item)):
            return _Decoded(item, None, None, skipped=not earlier, carried=tuple(earlier))
    decoding = _decode_bytes(item)
    with workers.budget.working(decoding):
        try:
            picture, note = _opened(prepared, item, workers.stacks)
            model_input = to_model_input(picture, info.input_size, info.channels, prepared.scaling,
                                         prepared.config.resize)
        except ImageError as exc:
            return _Decoded(item, None, None, error=str(exc))
        shown, view = drawn_picture(picture, info.input_size, prepared.config.resize, prepared.config.max_size)
        original_size = (picture.height, picture.width)
        del picture  # the full-size original, when the outputs are drawn smaller
    # The original is kept for rendering only while it fits the budget; otherwise it is read again.
    size = shown.width * shown.height * PICTURE_BYTES_PER_PIXEL
    kept = size if workers.budget.try_keep(size) else 0
    return _Decoded(item, shown if kept else None, model_input, view, note=note, kept=kept,
                    shown_size=(shown.height, shown.width), original_size=original_size, decode_bytes=decoding)


def _opened(prepared: Prepared, item: InputImage, stacks: StackCache) -> tuple[Image.Image, str]:
    """The item's RGB picture and note: a file's own, or a part's from its file's stack."""
    if item.part:
        return stacks.picture(item)
    return open_image(item.path, prepared.config.max_pixels, prepared.intensity)


def _decode_bytes(item: InputImage) -> int:
    """What opening the item holds at its peak: a part is a slice of a stack in memory."""
    return 0 if item.part else decode_bytes(item.path)


def _read_ahead(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map(work, items)`` on ``pool``, in order, with at most ``ahead`` items in flight."""
    in_flight: deque[Future] = deque()
    for item in items:
        in_flight.append(pool.submit(work, item))
        if len(in_flight) >= ahead:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last may be shorter), as they come."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _explain_batch(prepared: Prepared, batch: list[_Decoded], workers: _Workers, watch: _BatchWatch) -> list[_Pending]:
    good = [d for d in batch if not (d.error or d.skipped or d.carried)]
    explanations, failure = (), ""
    if good:
        inputs = np.stack([d.model_input for d in good])
        watch.runs(len(good), len(prepared.targets) * len(prepared.config.methods))
        try:
            explanations = tuple(prepared.explainer.explain(inputs, target, watch.on_stage)
                                 for target in prepared.targets)
            if prepared.config.metrics:
                watch.stage("deletion and insertion curves")
            faithfulness = _faithfulness(prepared, inputs, explanations)
        except tf.errors.OpError as exc:
            failure = f"the model failed on this batch: {first_line(exc)}"
    watch.done()
    position = {id(d): i for i, d in enumerate(good)}
    return [
        _Pending(d.item, "", skipped=True) if d.skipped
        else _Pending(d.item, "", carried=d.carried) if d.carried
        else _Pending(d.item, d.error or failure) if d.error or failure
        else _schedule(prepared, d, explanations, position[id(d)], workers, faithfulness)
        for d in batch
    ]


class _BatchWatch:
    """One batch's progress for the run's ``Watch``: its images count as done as their methods
    finish (a fraction per method and explained class), those that need no explaining (failed,
    skipped, resumed) at once, and whatever is left when the batch ends."""

    def __init__(self, watch: Watch, batch: list[_Decoded], first: bool) -> None:
        self._watch = watch
        self._left = float(len(batch))
        self._first = first
        self._share = 0.0  # images done per finished method run
        self.explained = False  # some of the batch's images went through the explainer
        for decoded in batch:
            part = decoded.item.part
            if part is not None and part.position == 0 and part.count > 1:  # a volume's slices, now known
                watch.grow(part.count - 1)

    def runs(self, images: int, method_runs: int) -> None:
        """``images`` of the batch are explained, by ``method_runs`` methods and explained classes;
        the others are done now."""
        self._advance(self._left - images)
        self._share = images / max(method_runs, 1)
        self.explained = True

    def on_stage(self, methods: tuple[str, ...], compiling: bool, finished: bool) -> None:
        """The explainer's ``StageCallback``."""
        if finished:
            self._advance(self._share * len(methods))
            return
        what = ", ".join(methods) or "predictions"
        self.stage(f"compiling {what} (the first batch waits for it)" if compiling
                   else f"{what}{' (first batch)' if self._first else ''}")

    def stage(self, text: str) -> None:
        self._watch.stage(text)

    def done(self) -> None:
        """The batch is explained (or failed): whatever was not counted yet is done."""
        self._advance(self._left)

    def _advance(self, images: float) -> None:
        images = min(images, self._left)
        if images > 0:
            self._left -= images
            self._watch.advance(images)


Figures = dict[str, "float | bool"]  # metric name -> value, for one image, method and explained class


def _faithfulness(prepared: Prepared, inputs: np.ndarray,
                  explanations: tuple[BatchExplanation, ...]) -> dict[tuple[int, str, int], Figures]:
    """--metrics deletion, insertion for every image, method and explained class of a batch:
    (tag position, method, image) -> {name: area}. The curves' inputs of all of them go through
    the model together, a batch at a time."""
    config = prepared.config
    wanted = [name for name in PERTURBATION_METRICS if name in config.metrics]
    if not wanted:
        return {}
    size = prepared.info.input_size
    baseline = prepared.baseline
    # Each image is blurred once, for every method and explained class.
    blurry = [blurred(image) for image in inputs] if "insertion" in wanted else []
    starts = {"deletion": lambda index: (inputs[index], baseline), "insertion": lambda index: (blurry[index], inputs[index])}
    keys, jobs = [], []
    for position, explanation in enumerate(explanations):
        for method, maps in explanation.maps.items():
            for index in range(len(inputs)):
                order = pixel_order(upsample(maps[index], size))
                for name in wanted:
                    source, target = starts[name](index)
                    jobs.append(CurveJob(functools.partial(perturbed, source, target, order, config.metric_steps),
                                         int(explanation.classes[index]), config.metric_steps))
                    keys.append((position, method, index, name))
    figures: dict[tuple[int, str, int], Figures] = {}
    for (position, method, index, name), area in zip(keys, curve_areas(jobs, prepared.explainer.probabilities,
                                                                  prepared.explainer.batch_size)):
        figures.setdefault((position, method, index), {})[name] = round(area, 6)
    return figures


def _schedule(prepared: Prepared, decoded: _Decoded, explanations: tuple[BatchExplanation, ...], index: int,
              workers: _Workers, faithfulness: dict[tuple[int, str, int], Figures]) -> _Pending:
    if not np.all(np.isfinite(explanations[0].scores[index])):
        return _Pending(decoded.item, "the model produced non-finite scores (NaN or inf) for this image")
    config = prepared.config
    item = decoded.item
    jobs, writes = [], []
    for method in config.methods:  # rows and files in the order the user asked for
        for position, (target, explanation) in enumerate(zip(prepared.targets, explanations)):
            paths = {kind: output_path(config.out_dir, item.output_relative, method, kind, target.tag,
                                       config.image_format) for kind in config.save}
            if config.report:
                paths[THUMBNAIL] = thumbnail_path(config.out_dir, item.output_relative, method, target.tag)
            text = caption(prepared, explanation, index)
            jobs.append(_Job(explanation.maps[method][index], paths, f"{text} | {method}",
                             item.part.count if wants_mosaic(config, item) else 0))
            writes.append((method, target, explanation, paths[config.save[0]],
                           faithfulness.get((position, method, index), {})))
    done = workers.pool.submit(_render_image, prepared, decoded, jobs, workers)
    return _Pending(decoded.item, "", decoded.note, index=index,
                    writes=tuple(_Write(*write, done, position) for position, write in enumerate(writes)))


@dataclass(frozen=True)
class _Job:
    """The files of one image for one method and explained class."""

    heatmap: np.ndarray  # the method's map at its own resolution
    paths: dict[str, Path]  # --save kind -> file
    caption: str  # the panel's caption
    tiles: int  # tiles in the mosaic of the image's file; 0 when it gets none


def _render_image(prepared: Prepared, decoded: _Decoded, jobs: list[_Job], workers: _Workers) -> list[_Outcome]:
    """Draw and write every file of one image, within the memory budget; the original is read
    again when it was not kept. Returns, per job, the outcome: None or the error that kept it
    from being written (a file system error, or the image no longer readable), and its mosaic
    tile when it has one."""
    height, width = decoded.shown_size
    estimate = render_estimate((height, width), prepared.config.save, prepared.config.image_format,
                               decoded.decode_bytes if decoded.image is None else 0)
    try:
        with workers.budget.working(estimate):
            image, view = decoded.image, decoded.view
            if image is None:
                image, view = drawn_picture(_opened(prepared, decoded.item, workers.stacks)[0],
                                            prepared.info.input_size, prepared.config.resize, prepared.config.max_size)
            # The small copies for the thumbnail, the mosaic tile and the figures against the
            # object, made once for every method.
            small = functools.cache(lambda size: shown_at(image, view, size))
            measure = _object_measure(prepared, decoded, small)
            return [_written(prepared, image, view, job, small, measure) for job in jobs]
    except ImageError as exc:  # changed or removed since it was read
        return [_Outcome(exc)] * len(jobs)
    finally:
        workers.budget.release(decoded.kept)


def _written(prepared: Prepared, image: Image.Image, view: View, job: _Job, small: Shrunk,
             measure: Callable[[np.ndarray], Figures]) -> _Outcome:
    try:
        _render(image, view, job.heatmap, prepared, job.paths, job.caption, small)
    except OSError as exc:
        return _Outcome(exc)
    tile = (_small_overlay(small(tile_size((image.height, image.width), job.tiles)), job.heatmap, prepared)
            if job.tiles else None)
    return _Outcome(None, tile, measure(job.heatmap))


MEASURE_LONG_SIDE = 1024  # maps are compared with objects at most this large: the figures barely move


def _object_measure(prepared: Prepared, decoded: _Decoded, small: Shrunk) -> Callable[[np.ndarray], Figures]:
    """A function of a map giving pointing, energy and IoU against the image's object (--truth-masks
    or --truth-boxes), on the map and mask at no more than ``MEASURE_LONG_SIDE`` pixels; {} without
    ground truth."""
    ground = prepared.ground
    if ground is None:
        return lambda heatmap: {}
    shown = decoded.shown_size
    size = output_size(shown, MEASURE_LONG_SIDE)
    mask = ground.mask(decoded.item, decoded.original_size, size)
    if mask is None:
        return lambda heatmap: {}
    view = small(size)[1]
    tolerance = prepared.config.pointing_tolerance * size[1] / decoded.original_size[1]

    def measure(heatmap: np.ndarray) -> Figures:
        saliency = upsample(heatmap, size, view)
        return {"pointing": pointing_hit(saliency, mask, tolerance), "energy": round(energy_in(saliency, mask), 6),
                "iou": round(iou(saliency, mask), 6)}

    return measure


def _render(image: Image.Image, view: View, heatmap: np.ndarray, prepared: Prepared, paths: dict[str, Path],
            caption: str, small: Shrunk) -> None:
    """Write ``image``'s files of one map (see ``draw_kind``), its raw values and thumbnail."""
    config = prepared.config
    for kind, path in paths.items():
        if kind == "raw":
            write_npy(path, heatmap)
        elif kind == THUMBNAIL:
            write_image(path, _small_overlay(small(thumbnail_size((image.height, image.width))), heatmap, prepared),
                        "jpeg")
        else:
            write_image(path, draw_kind(kind, image, view, heatmap, config.alpha, prepared.lut, caption,
                                        config.max_size, small), config.image_format)


def _small_overlay(shrunk: tuple[Image.Image, View], heatmap: np.ndarray, prepared: Prepared) -> np.ndarray:
    picture, view = shrunk
    return overlay(picture, heatmap, prepared.config.alpha, prepared.lut, view)


def _finish(prepared: Prepared, pending: list[_Pending], mosaics: _Mosaics, stacks: StackCache) -> Iterator[ImageResult]:
    for entry in pending:
        if entry.carried:
            result = ImageResult(entry.item, (), entry.carried)
        else:
            rows = list(_rows(prepared, entry))
            if wants_mosaic(prepared.config, entry.item) and not entry.skipped:
                rows = mosaics.add(entry, rows)
            result = ImageResult(entry.item, tuple(rows))
        stacks.done(entry.item)
        yield result


class _Mosaics:
    """The mosaic sheets of the file whose parts are being finished, one per method and
    explained class; written when its last part is."""

    def __init__(self, prepared: Prepared) -> None:
        self._prepared = prepared
        self._sheets: dict[tuple[str, Target], Sheet] = {}

    def add(self, entry: _Pending, rows: list[Row]) -> list[Row]:
        """Add the part's tiles (a failed part leaves its cells empty); after the file's last part,
        write the mosaics. Returns ``rows``, where a mosaic that could not be written turns the
        last part's row of its method into an error row."""
        config, part = self._prepared.config, entry.item.part
        if part.position == 0:
            self._sheets = {(method, target): Sheet() for method in config.methods for target in self._prepared.targets}
        outcomes = {(w.method, w.target): (w, w.done.result()[w.index]) for w in entry.writes}
        for (method, target), sheet in self._sheets.items():
            write, outcome = outcomes.get((method, target), (None, None))
            text = caption(self._prepared, write.explanation, entry.index) if write else "failed"
            sheet.add(f"{part.label} {text}", outcome.tile if outcome else None)
        if not part.last:
            return rows
        failed = {}
        for (method, target), sheet in self._sheets.items():
            path = mosaic_path(config, entry.item, method, target.tag)
            try:
                write_image(path, sheet.compose(), config.image_format)
            except OSError as exc:
                failed[method] = f"cannot write the mosaic {path}: {exc.strerror or exc}"
        self._sheets = {}
        return [replace(_error_row(self._prepared, entry.item, row.method, failed[row.method]), rank=row.rank)
                if row.method in failed and row.status == "ok" else row for row in rows]


def _rows(prepared: Prepared, pending: _Pending) -> Iterator[Row]:
    config = prepared.config
    if pending.skipped or pending.error:
        for method in config.methods:
            for target in prepared.targets:
                row = replace(_error_row(prepared, pending.item, method, pending.error), rank=target.rank)
                if pending.skipped:
                    path = output_path(config.out_dir, pending.item.output_relative, method, config.save[0], target.tag,
                                       config.image_format)
                    row = replace(row, status="skipped", output=str(path))
                yield row
        return
    for write in pending.writes:
        outcome = write.done.result()[write.index]
        error = outcome.error
        if isinstance(error, OSError):
            reason = f"cannot write {write.path}: {error.strerror or error}"
        elif isinstance(error, MaskError):
            reason = str(error)
        elif error is not None:
            reason = f"cannot read the image again to draw it: {error}"
        else:
            yield _ok_row(prepared, pending, write, outcome)
            continue
        yield replace(_error_row(prepared, pending.item, write.method, reason), rank=write.target.rank)


def _true(prepared: Prepared, item: InputImage, predicted: str = "") -> dict[str, object]:
    """The row's true_label and correct (whether ``predicted`` is it), with --true-labels."""
    if prepared.truth is None:
        return {}
    label = prepared.truth.label(item)
    return {"true_label": label, "correct": (label == predicted) if label and predicted else None}


def _ok_row(prepared: Prepared, pending: _Pending, write: _Write, outcome: _Outcome) -> Row:
    explanation, index = write.explanation, pending.index
    predicted = predicted_class(explanation, index)
    return explained_row(
        prepared, explanation, index, write.method, name=pending.item.name, note=pending.note,
        output=str(write.path), rank=write.target.rank, top_k=prepared.config.top_k,
        figures={**write.figures, **outcome.figures},
        true=_true(prepared, pending.item, predicted_name(class_label(prepared, predicted), predicted)))


def _error_row(prepared: Prepared, item: InputImage, method: str, error: str) -> Row:
    return error_row(prepared, item.name, method, error, _true(prepared, item))
