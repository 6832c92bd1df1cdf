"""The batch loop: decode ahead in threads, explain a batch, render and write while the next
batch computes, append the predictions table. Yields one result per image; never prints."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from . import __version__
from .config import AUTO, CUSTOM, RunConfig, check_preset_channels, load_labels, resolve_class
from .errors import ImageError, UsageError, first_line
from .explainers import REGISTRY
from .explainers.engine import TOP_CLASS, BatchExplanation, Explainer, MethodOptions, rank_request
from .budget import MemoryBudget, render_estimate
from .images import (PICTURE_BYTES_PER_PIXEL, PRESETS, InputImage, Scaling, View, custom_scaling, decode_bytes,
                     discover, fit_view, open_image, output_size, shown_at, to_model_input)
from .intensity import Intensity, parse_intensity
from .mosaic import Sheet, tile_size
from .models.info import LayerInfo, ModelInfo
from .models.inspect import open_model
from .models.layers import auto_layer, candidate_layers, resolve_layer
from .models.load import model_format
from .models.preprocessing import choose_preprocessing
from .models.probe import build_probe
from .outputs import (FIGURE_COLUMNS, MANIFEST_NAME, PredictionsWriter, Ranked, Row, file_digest, open_table, output_path,
                      read_table, table_columns, table_text, thumbnail_path, write_image, write_json, write_npy)
from .report import thumbnail_size
from .render import COLORMAPS, draw_heatmap, draw_overlay, draw_panel, overlay, upsample
from .stacks import StackCache, parse_slices
from .metrics import (PERTURBATION_METRICS, CurveJob, Means, blurred, curve_areas, energy_in, figure_from_cell, iou,
                      perturbed, pixel_order, pointing_hit)
from .truth import GroundTruth, MaskError, Tally, Truth, check_known, load_ground_truth, load_truth, predicted_name


@dataclass(frozen=True)
class Prepared:
    """A run with everything resolved: the model understood, layer and class chosen."""

    config: RunConfig
    info: ModelInfo
    layer: LayerInfo | None  # None when no method needs a layer
    layer_reason: str  # why that layer ('auto: end of the last conv block ...' or 'as requested')
    preprocess: str
    preprocess_reason: str
    scaling: Scaling  # the preset or custom scaling applied to 0..255 pixels
    labels: tuple[str, ...]
    target_class: int | None
    explainer: Explainer
    lut: np.ndarray
    intensity: Intensity  # --intensity, parsed
    truth: Truth | None  # --true-labels, read and checked against the model's classes
    ground: GroundTruth | None  # --truth-masks or --truth-boxes
    model_file: dict[str, str]  # path, SHA-256 and format, read once for run.json


@dataclass(frozen=True)
class ImageResult:
    """The rows one image produced (one per method and target), or the rows an interrupted
    run had recorded for it (``--resume``)."""

    item: InputImage
    rows: tuple[Row, ...]
    carried: tuple[dict[str, object], ...] = ()

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
FILES_AHEAD = 3  # files split into their images (volumes read whole) ahead of the one being explained
# Options that may differ between an interrupted run and its --resume without changing any row.
RESUME_NEUTRAL = frozenset({"existing", "fail_fast", "workers", "batch_size", "inputs", "model", "memory_budget",
                            "dicom", "report", "summary", "require"})
THUMBNAIL = "thumbnail"  # the report page's small overlay, written beside the --save kinds


def planned_outputs(config: RunConfig, item: InputImage) -> list[Path]:
    """Every file the run writes for ``item``, in ``--method``, target rank, then ``--save``
    order; for a part of a volume, its file's mosaics too."""
    own = [output_path(config.out_dir, item.output_relative, method, kind, tag, config.image_format)
           for method in config.methods for tag in config.target_tags for kind in config.save]
    mosaics = [mosaic_path(config, item, method, tag)
               for method in config.methods for tag in config.target_tags] if wants_mosaic(config, item) else []
    return own + mosaics


def wants_mosaic(config: RunConfig, item: InputImage) -> bool:
    """A mosaic is drawn for files of several explained parts, when any image output is saved."""
    return item.part is not None and item.part.count > 1 and any(kind != "raw" for kind in config.save)


def mosaic_path(config: RunConfig, item: InputImage, method: str, tag: str) -> Path:
    """``OUT/<relative path of the file>.<method>[.<tag>].mosaic.<png|jpg|webp>``."""
    return output_path(config.out_dir, item.relative, method, "mosaic", tag, config.image_format)


def check_existing(config: RunConfig, items: Iterable[InputImage]) -> None:
    """Refuse to replace earlier outputs unless asked to (``--overwrite``, ``--skip-existing``,
    ``--resume``); a resumed run must use the options the earlier one used."""
    if config.existing == "resume":
        _check_resumable(config)
    if config.existing != "refuse":
        return
    run_files = [p for p in (config.predictions_path, config.out_dir / MANIFEST_NAME) if p is not None]
    found = [p for p in run_files if p.exists()]
    found += [p for item in items for p in planned_outputs(config, item) if p.exists()]
    if found:
        more = f" and {len(found) - 1} more outputs" if len(found) > 1 else ""
        raise UsageError(f"{found[0]} exists{more}; pass --overwrite to replace them or --skip-existing "
                         "to keep them and explain only the images without outputs")


def _check_resumable(config: RunConfig) -> None:
    """The earlier run in OUT must have used the same model file and result-changing options."""
    path = config.out_dir / MANIFEST_NAME
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        earlier_options, earlier_model = earlier["options"], earlier["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable manifest: the table's own columns are checked when it is read
    current = _options(config)
    changed = sorted(key for key in current.keys() | earlier_options.keys()
                     if key not in RESUME_NEUTRAL and current.get(key) != earlier_options.get(key))
    if earlier_model != file_digest(config.model):
        changed.insert(0, "the model file")
    if changed:
        raise UsageError(f"--resume: the run in {config.out_dir} used other settings ({', '.join(changed)}); "
                         "resume with the same options, or start again with --overwrite")


def _previous_rows(config: RunConfig) -> dict[str, list[dict[str, object]]]:
    """``--resume``: the earlier table's rows of each image it finished (every row ok or
    skipped), keyed by input as the table writes it, in table order."""
    path = config.predictions_path
    if config.existing != "resume" or path is None or not path.exists():
        return {}
    try:
        columns, records = read_table(path, config.table_format)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--resume: cannot read the earlier table {path}: {exc}") from None
    if records and columns != table_columns(config.top_k, config.true_labels is not None, config.figures):
        raise UsageError(f"--resume: {path} has other columns than this run writes; resume with the same "
                         "options, or start again with --overwrite")
    by_input: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_input.setdefault(str(record["input"]), []).append(record)
    return {key: rows for key, rows in by_input.items() if all(r["status"] in ("ok", "skipped") for r in rows)}


def prepare(config: RunConfig) -> Prepared:
    """Load and inspect the model and settle every choice before any image is read."""
    model, info = open_model(config.model, input_size=config.input_size, output=config.output,
                             unsafe=config.unsafe, custom_objects=config.custom_objects)
    layer, layer_reason = _choose_layer(config, info) if config.needs_layer else (None, "")
    preprocessing = choose_preprocessing(config.preprocess, info, config.mean, config.std)
    check_preset_channels(preprocessing.preset, info.channels, preprocessing.mean, preprocessing.std)
    scaling = (custom_scaling(preprocessing.mean, preprocessing.std) if preprocessing.preset == CUSTOM
               else PRESETS[preprocessing.preset])
    labels = load_labels(config.labels) if config.labels else ()
    if labels and len(labels) != info.num_classes:
        raise UsageError(
            f"labels file {config.labels} has {len(labels)} names but the model has "
            f"{info.num_classes} classes"
        )
    if config.top_k > info.num_classes:
        raise UsageError(f"--top-k {config.top_k} is more than the model's {info.num_classes} classes")
    methods = {name: REGISTRY[name] for name in config.methods}
    attention_methods = [name for name, spec in methods.items() if spec.family == "attention"]
    wants_attention = bool(attention_methods)
    if wants_attention:
        check_attention(info, attention_methods)
    layer_path = layer.path if layer else None
    by_family: dict[str, dict[str, Callable]] = {}
    for name, spec in methods.items():
        by_family.setdefault(spec.family, {})[name] = spec.load()
    explainer = Explainer(
        build_probe(model, info, layer_path, attention=wants_attention), info, layer_path, by_family,
        attention_gradients=any(spec.attention_gradients for spec in methods.values()),
        batch_size=config.batch_size,
        options=MethodOptions(
            smoothgrad_samples=config.smoothgrad_samples, smoothgrad_noise=config.smoothgrad_noise,
            ig_steps=config.ig_steps, baseline=baseline_input(config.ig_baseline, info, scaling),
            scorecam_max_channels=config.scorecam_max_channels,
            head_fusion=config.head_fusion, discard_ratio=config.discard_ratio,
        ),
    )
    return Prepared(
        config=config,
        info=info,
        layer=layer,
        layer_reason=layer_reason,
        preprocess=preprocessing.preset,
        preprocess_reason=preprocessing.reason,
        scaling=scaling,
        labels=labels,
        target_class=resolve_class(config.target_class, labels, info.num_classes),
        explainer=explainer,
        lut=COLORMAPS[config.colormap](),
        intensity=parse_intensity(config.intensity),
        truth=_truth(config, labels, info.num_classes),
        ground=load_ground_truth(config.truth_masks, config.truth_boxes),
        model_file={"path": str(config.model), "sha256": file_digest(config.model), "format": model_format(config.model)},
    )


def _truth(config: RunConfig, labels: tuple[str, ...], classes: int) -> Truth | None:
    """``--true-labels`` read, every image's label checked before any image is explained."""
    if config.true_labels is None:
        return None
    truth = load_truth(config.true_labels)
    check_known(truth, discover(config.inputs, exclude=[config.out_dir], dicom=config.dicom), labels, classes)
    return truth


def _choose_layer(config: RunConfig, info: ModelInfo) -> tuple[LayerInfo, str]:
    """The target layer and why: ``--layer auto``'s structural choice, or the one asked for."""
    if config.layer == AUTO:
        layer, reason = auto_layer(info, config.layer_regex)
        return layer, f"auto: {reason}"
    return resolve_layer(info, config.layer, config.layer_regex), "as requested"


def check_attention(info: ModelInfo, requested: list[str]) -> None:
    """Attention methods need attention layers and a patch grid the tokens map onto."""
    asked = f"--method {','.join(requested)}"
    if not info.attention_layers:
        fitting = ", ".join(name for name, spec in REGISTRY.items() if spec.family != "attention")
        raise UsageError(f"{asked} needs a Vision Transformer (attention layers: Keras's "
                         f"MultiHeadAttention at any depth, or vit_keras's); this model has none; methods that fit it: {fitting}")
    if info.token_grid is None:
        raise UsageError(f"{asked} cannot place this model's attention on the image: {info.attention_note}")


def describe(path: Path, info: ModelInfo, layer_regex: str) -> dict:
    """What ``xai info`` reports, as plain JSON-ready values."""
    candidates = candidate_layers(info, layer_regex)
    auto, auto_reason = auto_layer(info, layer_regex) if candidates else (None, "")
    preprocessing = choose_preprocessing(AUTO, info)
    usable = [name for name, spec in REGISTRY.items()
              if (candidates or not spec.needs_layer) and (spec.family != "attention" or info.token_grid)]
    return {
        "model": str(path),
        "format": model_format(path),
        "input_shape": [*info.input_size, info.channels],
        "outputs": [{"index": o.index, "layer": o.head_path, "shape": list(o.shape), "activation": o.final_activation,
                     "explainable": o.explainable} for o in info.outputs],
        "explained_output": info.head_path,
        "output_choice": info.output_reason,
        "final_activation": info.final_activation,
        "classes": info.num_classes,
        "preprocessing_layers": list(info.preprocessing),
        "auto_preprocess": f"{preprocessing.preset} ({preprocessing.reason})",
        "auto_layer": auto.path if auto else None,
        "auto_layer_reason": auto_reason,
        "candidate_layers": len(candidates),
        "attention_layers": list(info.attention_layers),
        "token_grid": list(info.token_grid) if info.token_grid else None,
        "methods": usable,
    }


def baseline_input(name: str, info: ModelInfo, scaling: Scaling) -> np.ndarray:
    """The integrated-gradients baseline in model-input units: (H, W, C) float32."""
    shape = (*info.input_size, info.channels)
    if name == "zeros":
        return np.zeros(shape, np.float32)
    pixel = {"black": 0.0, "white": 255.0, "gray": 127.5}[name]
    return scaling(np.full(shape, pixel, np.float32)).astype(np.float32)


def layer_label(prepared: Prepared, method: str) -> str:
    """What the CSV's layer column says: the target layer, the attention layers rolled out
    ('first..last'), or 'input' for gradient methods."""
    family = REGISTRY[method].family
    if family == "attention":
        attention = prepared.info.attention_layers
        return attention[0] if len(attention) == 1 else f"{attention[0]}..{attention[-1]}"
    return prepared.layer.path if REGISTRY[method].needs_layer else "input"


def run(prepared: Prepared, items: Iterable[InputImage], stop: Callable[[], str | None] = lambda: None,
        budget: MemoryBudget | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` in order, writing the files under the output folder, the predictions
    table (to its file or standard output) and ``run.json`` (at the start, then at the end).

    ``stop`` is asked before each batch; when it returns a reason (e.g. 'SIGINT') the run
    finishes the batches under way, keeps the rows of a resumed run it did not reach, records
    the reason in ``run.json`` and ends. ``--fail-fast`` ends it the same way after a failure.
    Decoded originals and the work under way are bounded by ``budget`` (by default one of
    ``--memory-budget``), whose accounting the caller can read afterwards.
    """
    config = prepared.config
    budget = budget or MemoryBudget(config.memory_budget * 2**20)
    stacks = StackCache(budget, prepared.intensity, parse_slices(config.slices), config.slice_axis, config.max_pixels)
    started = time.monotonic()
    counts = dict.fromkeys(OUTCOMES, 0)
    carried = _previous_rows(config)
    try:
        config.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(config.out_dir / MANIFEST_NAME, manifest(prepared, counts, "running", 0.0))
        table = config.predictions_path
        stream = contextlib.nullcontext(sys.stdout) if table is None else open_table(table)
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {config.out_dir}: {exc.strerror or exc}") from None
    status = "complete"
    # Decoding and rendering have pools of their own: a decode waiting for memory must never
    # queue ahead of the render that would free it. Volumes are read whole, a few files ahead, by
    # a thread of their own while the slices before them are explained.
    with (stream as table_stream, ThreadPoolExecutor(config.workers, thread_name_prefix="xai-read") as readers,
          ThreadPoolExecutor(config.workers, thread_name_prefix="xai-write") as writers,
          ThreadPoolExecutor(1, thread_name_prefix="xai-split") as splitter):
        workers = _Workers(writers, budget, stacks)
        writer = PredictionsWriter(table_stream, config.table_format, config.top_k, prepared.truth is not None,
                                   config.figures)
        parts = chain.from_iterable(_read_ahead(splitter, lambda item: list(stacks.split([item])), items, FILES_AHEAD))
        decoded = _read_ahead(readers, lambda entry: _decode(prepared, *entry, carried, workers),
                              _passable(config, parts, carried), 2 * config.batch_size)
        pending: deque[list[_Pending]] = deque()
        mosaics = _Mosaics(prepared)
        tally = Tally()
        means = Means.empty()

        def finish_oldest() -> Iterator[ImageResult]:
            for result in _finish(prepared, pending.popleft(), writer, mosaics, stacks):
                carried.pop(table_text(result.item.name), None)
                counts[result.outcome] += 1
                tally.add(*_labelled(result))
                _add_figures(means, result)
                yield result

        for batch in _batches(decoded, config.batch_size):
            reason = stop() or ("the first failure (--fail-fast)" if config.fail_fast and counts["failed"] else None)
            if reason:
                status = f"stopped by {reason}"
                break
            pending.append(_explain_batch(prepared, batch, workers))
            # The previous batch's PNGs were encoding while this batch computed.
            if len(pending) > 1:
                yield from finish_oldest()
        while pending:
            yield from finish_oldest()
        if status != "complete":  # rows the resumed run had for images this one did not reach stay
            writer.write_records(record for rows in carried.values() for record in rows)
    write_json(config.out_dir / MANIFEST_NAME,
               manifest(prepared, counts, status, time.monotonic() - started, tally, means))


def _add_figures(means: Means, result: ImageResult) -> None:
    """The figures of an explained image's rows (or of the rows a resumed run carried)."""
    for row in result.rows:
        if row.status == "ok":
            means.add(row.method, row.figures)
    for record in result.carried:
        if record.get("status") == "ok":
            means.add(str(record["method"]), {name: figure_from_cell(record.get(column))
                                              for name, column in FIGURE_COLUMNS.items() if column in record})



def _labelled(result: ImageResult) -> tuple[str, str]:
    """(true label, predicted class) of an explained image, for the accuracy; ('', '') otherwise."""
    if result.rows and result.rows[0].status == "ok":
        row = result.rows[0]
        return row.true_label, predicted_name(row.pred_label, row.pred_index)
    if result.carried and result.carried[0].get("status") == "ok":
        record = result.carried[0]
        return str(record.get("true_label") or ""), predicted_name(str(record.get("pred_label") or ""),
                                                                   record.get("pred_index"))
    return "", ""


def manifest(prepared: Prepared, counts: dict[str, int], status: str, seconds: float,
             tally: Tally | None = None, means: Means | None = None) -> dict:
    """What ``OUT/run.json`` records: versions, the model's SHA-256, what was resolved, every
    option's value, how the run ended, counts per outcome, the accuracy and confusion matrix
    (with --true-labels) and timing."""
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
            "final_activation": prepared.info.final_activation,
            "classes": prepared.info.num_classes,
            "preprocess": prepared.preprocess,
            "preprocess_reason": prepared.preprocess_reason,
            "target_class": prepared.target_class,
        },
        "options": _options(config),
        "status": status,
        "counts": {"images": sum(counts.values()), **counts},
        "seconds": round(seconds, 3),
    }


def _options(config: RunConfig) -> dict[str, object]:
    """Every option's value, JSON-ready, as run.json records it."""
    return {field.name: _plain(getattr(config, field.name)) for field in fields(config)}


def _plain(value: object) -> object:
    """JSON-ready: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


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
    tag: str  # the explained class's tag ('' or 'top2', ...)
    explanation: BatchExplanation  # of the batch, for this target tag's classes
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
        shown, view = _shown(prepared, picture)
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


def _shown(prepared: Prepared, picture: Image.Image) -> tuple[Image.Image, View]:
    """The original at its output size (``--max-size``) and the view of it the model had: the
    model saw the original at its full size."""
    size = (picture.height, picture.width)
    view = fit_view(size, prepared.info.input_size, prepared.config.resize)
    return shown_at(picture, view, output_size(size, prepared.config.max_size))


def _read_ahead(pool: ThreadPoolExecutor, work: Callable, items: Iterable, ahead: int) -> Iterator:
    """``map(work, items)`` on ``pool``, in order, with at most ``ahead`` items in flight."""
    in_flight: deque[Future] = deque()
    for item in items:
        in_flight.append(pool.submit(work, item))
        if len(in_flight) >= ahead:
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()


def _batches(decoded: Iterator[_Decoded], size: int) -> Iterator[list[_Decoded]]:
    batch: list[_Decoded] = []
    for entry in decoded:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _explain_batch(prepared: Prepared, batch: list[_Decoded], workers: _Workers) -> list[_Pending]:
    good = [d for d in batch if not (d.error or d.skipped or d.carried)]
    explanations, failure = (), ""
    if good:
        inputs = np.stack([d.model_input for d in good])
        try:
            explanations = tuple(prepared.explainer.explain(inputs, requested)
                                 for requested in _requests(prepared, len(good)))
            faithfulness = _faithfulness(prepared, inputs, explanations)
        except tf.errors.OpError as exc:
            failure = f"the model failed on this batch: {first_line(exc)}"
    position = {id(d): i for i, d in enumerate(good)}
    return [
        _Pending(d.item, "", skipped=True) if d.skipped
        else _Pending(d.item, "", carried=d.carried) if d.carried
        else _Pending(d.item, d.error or failure) if d.error or failure
        else _schedule(prepared, d, explanations, position[id(d)], workers, faithfulness)
        for d in batch
    ]


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
    baseline = baseline_input(config.ig_baseline, prepared.info, prepared.scaling)
    # Each image is blurred once, for every method and explained class.
    blurry = [blurred(image) for image in inputs] if "insertion" in wanted else []
    starts = {"deletion": lambda index: (inputs[index], baseline), "insertion": lambda index: (blurry[index], inputs[index])}
    keys, jobs = [], []
    for tag, explanation in enumerate(explanations):
        for method, maps in explanation.maps.items():
            for index in range(len(inputs)):
                order = pixel_order(upsample(maps[index], size))
                for name in wanted:
                    source, target = starts[name](index)
                    jobs.append(CurveJob(functools.partial(perturbed, source, target, order, config.metric_steps),
                                         int(explanation.classes[index]), config.metric_steps))
                    keys.append((tag, method, index, name))
    figures: dict[tuple[int, str, int], Figures] = {}
    for (tag, method, index, name), area in zip(keys, curve_areas(jobs, prepared.explainer.probabilities,
                                                                  prepared.explainer.batch_size)):
        figures.setdefault((tag, method, index), {})[name] = round(area, 6)
    return figures


def _requests(prepared: Prepared, count: int) -> list[np.ndarray]:
    """The classes to explain for ``count`` images, one array per target tag."""
    if prepared.config.target == "topk":
        return [np.full(count, rank_request(rank)) for rank in range(1, prepared.config.top_k + 1)]
    return [np.full(count, TOP_CLASS if prepared.target_class is None else prepared.target_class)]


def _schedule(prepared: Prepared, decoded: _Decoded, explanations: tuple[BatchExplanation, ...], index: int,
              workers: _Workers, faithfulness: dict[tuple[int, str, int], Figures]) -> _Pending:
    if not np.all(np.isfinite(explanations[0].scores[index])):
        return _Pending(decoded.item, "the model produced non-finite scores (NaN or inf) for this image")
    config = prepared.config
    item = decoded.item
    jobs, writes = [], []
    for method in config.methods:  # rows and files in the order the user asked for
        for position, (tag, explanation) in enumerate(zip(config.target_tags, explanations)):
            paths = {kind: output_path(config.out_dir, item.output_relative, method, kind, tag, config.image_format)
                     for kind in config.save}
            if config.report:
                paths[THUMBNAIL] = thumbnail_path(config.out_dir, item.output_relative, method, tag)
            caption = _caption(prepared, explanation, index)
            jobs.append(_Job(explanation.maps[method][index], paths, f"{caption} | {method}",
                             item.part.count if wants_mosaic(config, item) else 0))
            writes.append((method, tag, explanation, paths[config.save[0]], faithfulness.get((position, method, index), {})))
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
                image, view = _shown(prepared, _opened(prepared, decoded.item, workers.stacks)[0])
            # The small copies for the thumbnail, the mosaic tile and the figures against the
            # object, made once for every method.
            small = functools.cache(lambda size: shown_at(image, view, size))
            measure = _object_measure(prepared, decoded, small)
            return [_written(prepared, image, view, job, small, measure) for job in jobs]
    except ImageError as exc:  # changed or removed since it was read
        return [_Outcome(exc)] * len(jobs)
    finally:
        workers.budget.release(decoded.kept)


Shrunk = Callable[[tuple[int, int]], tuple[Image.Image, View]]  # (height, width) -> the image and view at that size


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


def _caption(prepared: Prepared, explanation: BatchExplanation, index: int) -> str:
    """'label 0.93' for the predicted class, and the explained class when it differs."""
    probabilities = explanation.probabilities[index]
    predicted, explained = _predicted(explanation, index), int(explanation.classes[index])
    name = lambda i: _label(prepared, i) or f"class {i}"  # noqa: E731
    text = f"{name(predicted)} {probabilities[predicted]:.2f}"
    return text if explained == predicted else f"{text}; explaining {name(explained)}"


def _render(image: Image.Image, view: View, heatmap: np.ndarray, prepared: Prepared, paths: dict[str, Path],
            caption: str, small: Shrunk) -> None:
    config = prepared.config
    writers = {
        "overlay": lambda path: write_image(path, draw_overlay(image, heatmap, config.alpha, prepared.lut, view),
                                            config.image_format),
        "heatmap": lambda path: write_image(path, draw_heatmap(heatmap, (image.height, image.width), view),
                                            config.image_format),
        "raw": lambda path: write_npy(path, heatmap),
        "panel": lambda path: write_image(path, draw_panel(image, heatmap, config.alpha, prepared.lut, caption, view),
                                          config.image_format),
        THUMBNAIL: lambda path: write_image(path, _small_overlay(small(thumbnail_size((image.height, image.width))),
                                                                 heatmap, prepared), "jpeg"),
    }
    for kind, path in paths.items():
        writers[kind](path)


def _small_overlay(shrunk: tuple[Image.Image, View], heatmap: np.ndarray, prepared: Prepared) -> np.ndarray:
    picture, view = shrunk
    return overlay(picture, heatmap, prepared.config.alpha, prepared.lut, view)


def _finish(prepared: Prepared, pending: list[_Pending], writer: PredictionsWriter, mosaics: _Mosaics,
            stacks: StackCache) -> Iterator[ImageResult]:
    for entry in pending:
        if entry.carried:
            writer.write_records(entry.carried)
            result = ImageResult(entry.item, (), entry.carried)
        else:
            rows = list(_rows(prepared, entry))
            if wants_mosaic(prepared.config, entry.item) and not entry.skipped:
                rows = mosaics.add(entry, rows)
            result = ImageResult(entry.item, tuple(rows))
            writer.write(result.rows)
        stacks.done(entry.item)
        yield result


class _Mosaics:
    """The mosaic sheets of the file whose parts are being finished, one per method and
    explained class; written when its last part is."""

    def __init__(self, prepared: Prepared) -> None:
        self._prepared = prepared
        self._sheets: dict[tuple[str, str], Sheet] = {}

    def add(self, entry: _Pending, rows: list[Row]) -> list[Row]:
        """Add the part's tiles (a failed part leaves its cells empty); after the file's last part,
        write the mosaics. Returns ``rows``, where a mosaic that could not be written turns the
        last part's row of its method into an error row."""
        config, part = self._prepared.config, entry.item.part
        if part.position == 0:
            self._sheets = {(method, tag): Sheet() for method in config.methods for tag in config.target_tags}
        outcomes = {(w.method, w.tag): (w, w.done.result()[w.index]) for w in entry.writes}
        for (method, tag), sheet in self._sheets.items():
            write, outcome = outcomes.get((method, tag), (None, None))
            caption = _caption(self._prepared, write.explanation, entry.index) if write else "failed"
            sheet.add(f"{part.label} {caption}", outcome.tile if outcome else None)
        if not part.last:
            return rows
        failed = {}
        for (method, tag), sheet in self._sheets.items():
            path = mosaic_path(config, entry.item, method, tag)
            try:
                write_image(path, sheet.compose(), config.image_format)
            except OSError as exc:
                failed[method] = f"cannot write the mosaic {path}: {exc.strerror or exc}"
        self._sheets = {}
        return [_error_row(self._prepared, entry.item, row.method, failed[row.method])
                if row.method in failed and row.status == "ok" else row for row in rows]


def _rows(prepared: Prepared, pending: _Pending) -> Iterator[Row]:
    config = prepared.config
    if pending.skipped or pending.error:
        for method in config.methods:
            for tag in config.target_tags:
                row = _error_row(prepared, pending.item, method, pending.error)
                if pending.skipped:
                    path = output_path(config.out_dir, pending.item.output_relative, method, config.save[0], tag,
                                       config.image_format)
                    row = replace(row, status="skipped", output=str(path))
                yield row
        return
    for write in pending.writes:
        outcome = write.done.result()[write.index]
        error = outcome.error
        if isinstance(error, OSError):
            yield _error_row(prepared, pending.item, write.method, f"cannot write {write.path}: {error.strerror or error}")
        elif isinstance(error, MaskError):
            yield _error_row(prepared, pending.item, write.method, str(error))
        elif error is not None:
            yield _error_row(prepared, pending.item, write.method, f"cannot read the image again to draw it: {error}")
        else:
            yield _ok_row(prepared, pending, write, outcome)


def _ok_row(prepared: Prepared, pending: _Pending, write: _Write, outcome: _Outcome) -> Row:
    explanation, i, method = write.explanation, pending.index, write.method
    probabilities = explanation.probabilities[i]
    predicted = _predicted(explanation, i)
    explained = int(explanation.classes[i])
    return Row(
        input=pending.item.name,
        status="ok",
        error="",
        note=pending.note,
        pred_index=predicted,
        pred_label=_label(prepared, predicted),
        pred_prob=float(probabilities[predicted]),
        class_index=explained,
        class_label=_label(prepared, explained),
        class_prob=float(probabilities[explained]),
        class_score=float(explanation.scores[i, explained]),
        method=method,
        layer=layer_label(prepared, method),
        output=str(write.path),
        top=_top_classes(prepared, explanation, i),
        **_true(prepared, pending.item, predicted_name(_label(prepared, predicted), predicted)),
        figures={**write.figures, **outcome.figures},
    )


def _true(prepared: Prepared, item: InputImage, predicted: str = "") -> dict[str, object]:
    """The row's true_label and correct (whether ``predicted`` is it), with --true-labels."""
    if prepared.truth is None:
        return {}
    label = prepared.truth.label(item)
    return {"true_label": label, "correct": (label == predicted) if label and predicted else None}


def _predicted(explanation: BatchExplanation, index: int) -> int:
    """The top class by score, as the explained top class is chosen: probabilities of nearly tied
    classes can round to the same float32 value where their scores still differ."""
    return int(np.argmax(explanation.scores[index]))


def _top_classes(prepared: Prepared, explanation: BatchExplanation, index: int) -> tuple[Ranked, ...]:
    """The image's ``--top-k`` classes, best first, ranked by score as ``--target topk`` ranks them."""
    order = np.argsort(-explanation.scores[index], kind="stable")[:prepared.config.top_k]
    probabilities = explanation.probabilities[index]
    return tuple(Ranked(int(c), _label(prepared, int(c)), float(probabilities[c])) for c in order)


def _error_row(prepared: Prepared, item: InputImage, method: str, error: str) -> Row:
    return Row(
        input=item.name, status="error", error=error, note="",
        pred_index=None, pred_label="", pred_prob=None,
        class_index=None, class_label="", class_prob=None, class_score=None,
        method=method, layer=layer_label(prepared, method), output="", **_true(prepared, item),
    )


def _label(prepared: Prepared, index: int) -> str:
    return prepared.labels[index] if index < len(prepared.labels) else ""
