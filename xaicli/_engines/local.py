"""The local engine: decode ahead in threads, explain a batch, render and write while the next
batch computes. Yields one result per image, in input order; never prints. A Ray replica runs
the same loop over its share of the inputs."""

from __future__ import annotations

import functools
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import tensorflow as tf

from .._budget import MemoryBudget
from .._errors import first_line
from .._evaluation.faithfulness import PERTURBATION_METRICS, CurveJob, blurred, curve_areas, perturbed, pixel_order
from .._explain.explainer import Explained
from .._inputs.discover import InputImage
from .._inputs.stacks import StackCache, parse_slices
from .._inputs.volumes import fit_volume_view, scan_map
from .._outputs.naming import output_path, thumbnail_path, wants_mosaic
from .._outputs.render import upsample
from .._runs.config import default_workers
from .._runs.decisions import Prepared
from .._runs.record import ImageResult, Record
from .._runs.regions import object_label
from .._runs.rows import caption
from . import Watch
from .decoded import Decoded, Workers, decode, passable
from .drawn import Figures, Job, THUMBNAIL, render_image
from .finished import Mosaics, Pending, Write, finish

STORE_THREADS = 16  # read or write threads when a store's requests (10-100 ms each) are among their work
FILES_AHEAD = 3  # files split into their images (volumes read whole) ahead of the one being explained
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
    # a thread of their own while the slices before them are explained. Fetches from a store and
    # puts to it wait on the network: more threads keep more of them in flight.
    reading = max(threads, STORE_THREADS) if config.inputs_on_store else threads
    writing = max(threads, STORE_THREADS) if config.store is not None else threads
    with (ThreadPoolExecutor(reading, thread_name_prefix="xai-read") as readers,
          ThreadPoolExecutor(writing, thread_name_prefix="xai-write") as writers,
          ThreadPoolExecutor(1, thread_name_prefix="xai-split") as splitter):
        workers = Workers(writers, budget, stacks)
        # A 3-D model takes each volume whole; a 2-D model its slices.
        parts = items if prepared.info.takes_volumes else chain.from_iterable(
            _read_ahead(splitter, lambda item: list(stacks.split([item])), items, FILES_AHEAD))
        decoded = _read_ahead(readers, lambda entry: decode(prepared, *entry, carried, workers),
                              passable(prepared, parts, carried), 2 * config.batch_size)
        mosaics = Mosaics(prepared)
        pending: deque[list[Pending]] = deque()
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
                yield from finish(prepared, pending.popleft(), mosaics, stacks)
        while pending:
            yield from finish(prepared, pending.popleft(), mosaics, stacks)


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


def _explain_batch(prepared: Prepared, batch: list[Decoded], workers: Workers, watch: _BatchWatch) -> list[Pending]:
    good = [d for d in batch if not (d.error or d.skipped or d.carried)]
    explained, failure = [], ""
    if good:
        inputs = np.stack([d.model_input for d in good])
        watch.runs(len(good), len(prepared.targets) * len(prepared.config.methods))
        try:
            given = [d.given for d in good] if prepared.config.region != "predicted" else None
            explained = prepared.explainer.explain_each(inputs, prepared.targets, watch.on_stage, given)
            if prepared.config.metrics:
                watch.stage("deletion and insertion curves")
            faithfulness = _faithfulness(prepared, inputs, explained)
        except tf.errors.OpError as exc:
            failure = f"the model failed on this batch: {first_line(exc)}"
    watch.done()
    position = {id(d): i for i, d in enumerate(good)}
    pending = [
        Pending(d.item, "", skipped=True) if d.skipped
        else Pending(d.item, "", carried=d.carried) if d.carried
        else Pending(d.item, d.error or failure) if d.error or failure
        else _schedule(prepared, d, explained[position[id(d)]], position[id(d)], workers, faithfulness)
        for d in batch
    ]
    for d, entry in zip(batch, pending):
        if not any(write.done for write in entry.writes):  # nothing will draw it: what it kept is free
            workers.budget.release(d.kept)
    return pending


class _BatchWatch:
    """One batch's progress for the run's ``Watch``: its images count as done as their methods
    finish (a fraction per method and explained class), those that need no explaining (failed,
    skipped, resumed) at once, and whatever is left when the batch ends."""

    def __init__(self, watch: Watch, batch: list[Decoded], first: bool) -> None:
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


def _faithfulness(prepared: Prepared, inputs: np.ndarray,
                  explained: list[list[Explained]]) -> dict[tuple[int, str, int], Figures]:
    """--metrics deletion, insertion for every image, method and explained class of a batch:
    (image, method, the class's place among the image's) -> {name: area}. The curves' inputs of
    all of them go through the model together, a batch at a time."""
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
    for index, image_explained in enumerate(explained):
        for position, each in enumerate(image_explained):
            explanation, at = each.explanation, each.index
            for method, maps in explanation.maps.items():
                order = pixel_order(_on_input_grid(maps[at], size))
                for name in wanted:
                    source, target = starts[name](index)
                    jobs.append(CurveJob(functools.partial(perturbed, source, target, order, config.metric_steps),
                                         int(explanation.classes[at]), config.metric_steps, each.target.outline))
                    keys.append((index, method, position, name))
    figures: dict[tuple[int, str, int], Figures] = {}
    for (index, method, position, name), area in zip(keys, curve_areas(jobs, prepared.explainer.probabilities,
                                                                  prepared.explainer.batch_size)):
        figures.setdefault((index, method, position), {})[name] = round(area, 6)
    return figures


def _on_input_grid(heatmap: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """A map (h, w) or (d, h, w) resized over the whole model input of ``size``, (H, W) or
    (D, H, W): the pixels or voxels the curves rank."""
    if heatmap.ndim == 3:
        return scan_map(heatmap, fit_volume_view(size, size), size)
    return upsample(heatmap, size)


def _schedule(prepared: Prepared, decoded: Decoded, explained: list[Explained], index: int,
              workers: Workers, faithfulness: dict[tuple[int, str, int], Figures]) -> Pending:
    """The image's files drawn and written in the pool, one set per method and explained class;
    ``explained``: the image's explained classes, ``index`` its place in the batch."""
    if not all(np.all(np.isfinite(e.explanation.scores[e.index])) for e in explained):
        return Pending(decoded.item, "the model produced non-finite scores (NaN or inf) for this image")
    config = prepared.config
    item = decoded.item
    jobs, writes = [], []
    for method in config.methods:  # rows and files in the order the user asked for
        for position, each in enumerate(explained):
            if not each.target.explains:
                writes.append((method, each, None, {}))
                continue
            tag = each.target.tag
            paths = {kind: output_path(config.out_dir, item.output_relative, method, kind, tag, config.image_format)
                     for kind in config.save}
            if config.report:
                paths[THUMBNAIL] = thumbnail_path(config.out_dir, item.output_relative, method, tag)
            text = caption(prepared, each.explanation, each.index)
            jobs.append(Job(each.explanation.maps[method][each.index], paths, f"{text} | {method}",
                            item.part.count if wants_mosaic(config, item) else 0, each.target.outline,
                            object_label(prepared.info, int(each.explanation.classes[each.index]))))
            writes.append((method, each, paths[config.save[0]], faithfulness.get((index, method, position), {})))
    done = workers.pool.submit(render_image, prepared, decoded, jobs, workers) if jobs else None
    placed = iter(range(len(jobs)))
    return Pending(decoded.item, "", decoded.note, index=index,
                   writes=tuple(Write(method, each, path, figures, done if path else None, next(placed) if path else -1)
                                for method, each, path, figures in writes))
