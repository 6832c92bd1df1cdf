"""Run-level decisions (``prepare``), shared by every engine: the model understood, the layer,
preprocessing and classes chosen, earlier outputs and runs checked, the table and ``run.json``
recorded as results come in. Never prints."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from . import __version__
from .config import AUTO, CUSTOM, RunConfig, check_preset_channels, load_labels, resolve_class
from .errors import InterruptedRunError, UsageError
from .explainers import REGISTRY
from .explainers.engine import Explainer, MethodOptions
from .images import PRESETS, InputImage, Scaling, custom_scaling, discover
from .intensity import Intensity, parse_intensity
from .metrics import Means, figure_from_cell
from .models.info import LayerInfo, ModelInfo
from .models.inspect import open_model
from .models.layers import auto_layer, candidate_layers, resolve_layer
from .models.load import model_format
from .models.preprocessing import Preprocessing, choose_preprocessing
from .models.probe import build_probe
from .outputs import (FIGURE_COLUMNS, MANIFEST_NAME, THUMBNAIL_DIR, PredictionsWriter, Row, Tee, file_digest,
                      open_table, output_path, read_table, remove_temporary_files, table_columns, table_text, write_json)
from .render import COLORMAPS
from .truth import GroundTruth, Tally, Truth, check_known, load_ground_truth, load_truth, predicted_name


@dataclass(frozen=True)
class Decisions:
    """A run's choices as plain data, settled once before any image is read: what every engine,
    and every replica of the model on a cluster, follows."""

    config: RunConfig
    layer_path: str | None  # None when no method needs a layer
    layer_reason: str  # why that layer ('auto: end of the last conv block ...' or 'as requested')
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    target_class: int | None
    truth: Truth | None  # --true-labels, read and checked against the model's classes
    ground: GroundTruth | None  # --truth-masks or --truth-boxes
    model_file: dict[str, str]  # path, SHA-256 and format, read once for run.json


@dataclass(frozen=True)
class Prepared:
    """A run with everything resolved: the decisions, and the model built to follow them."""

    decisions: Decisions
    info: ModelInfo
    layer: LayerInfo | None
    scaling: Scaling  # the preset or custom scaling applied to 0..255 pixels
    baseline: np.ndarray  # (H, W, C) model input of --ig-baseline: integrated gradients' start, deletion's end
    explainer: Explainer
    lut: np.ndarray
    intensity: Intensity  # --intensity, parsed

    @property
    def config(self) -> RunConfig:
        return self.decisions.config

    @property
    def layer_reason(self) -> str:
        return self.decisions.layer_reason

    @property
    def preprocess(self) -> str:
        return self.decisions.preprocessing.preset

    @property
    def preprocess_reason(self) -> str:
        return self.decisions.preprocessing.reason

    @property
    def labels(self) -> tuple[str, ...]:
        return self.decisions.labels

    @property
    def target_class(self) -> int | None:
        return self.decisions.target_class

    @property
    def truth(self) -> Truth | None:
        return self.decisions.truth

    @property
    def ground(self) -> GroundTruth | None:
        return self.decisions.ground

    @property
    def model_file(self) -> dict[str, str]:
        return self.decisions.model_file


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
# Options that may differ between an interrupted run and its --resume without changing any row.
RESUME_NEUTRAL = frozenset({"existing", "fail_fast", "workers", "batch_size", "inputs", "model", "memory_budget",
                            "dicom", "report", "summary", "require", "engine", "ray_address",
                            "gpus_per_worker"})


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
    status = _earlier_status(config.out_dir)
    if status == "running" or status.startswith("stopped"):
        raise InterruptedRunError(config.out_dir, "killed" if status == "running" else status)
    run_files = [p for p in (config.predictions_path, config.out_dir / MANIFEST_NAME) if p is not None]
    found = [p for p in run_files if p.exists()]
    found += [p for item in items for p in planned_outputs(config, item) if p.exists()]
    if found:
        more = f" and {len(found) - 1} more outputs" if len(found) > 1 else ""
        raise UsageError(f"{found[0]} exists{more}; pass --overwrite to replace them or --skip-existing "
                         "to keep them and explain only the images without outputs")


def _earlier_status(out_dir: Path) -> str:
    """How the run in ``out_dir`` ended, as its ``run.json`` says ('' when there is none)."""
    try:
        return str(json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8")).get("status", ""))
    except (OSError, ValueError, AttributeError):
        return ""


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


def previous_rows(config: RunConfig) -> dict[str, list[dict[str, object]]]:
    """``--resume``: the earlier table's rows of each image it finished (every row ok or
    skipped), keyed by input as the table writes it, in table order."""
    path = config.kept_table_path
    if config.existing != "resume" or not path.exists():
        return {}
    try:
        columns, records = read_table(path, config.table_format)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--resume: cannot read the earlier table {path}: {exc}") from None
    if records and columns != table_columns(config.top_k, config.true_labels is not None, config.figures,
                                            config.target == "topk"):
        raise UsageError(f"--resume: {path} has other columns than this run writes; resume with the same "
                         "options, or start again with --overwrite")
    by_input: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_input.setdefault(str(record["input"]), []).append(record)
    return {key: rows for key, rows in by_input.items() if all(r["status"] in ("ok", "skipped") for r in rows)}


def prepare(config: RunConfig) -> Prepared:
    """Load and inspect the model and settle every choice before any image is read."""
    model, info = _open(config)
    return _built(model, info, _decide(config, info))


def prepare_decided(decisions: Decisions) -> Prepared:
    """The model loaded again to follow choices made elsewhere (a replica of the run's model on
    a Ray worker): the same loading options, layer, preprocessing and classes."""
    model, info = _open(decisions.config)
    return _built(model, info, decisions)


def _open(config: RunConfig) -> tuple[keras.Model, ModelInfo]:
    return open_model(config.model, input_size=config.input_size, output=config.output, unsafe=config.unsafe,
                      custom_objects=config.custom_objects)


def _decide(config: RunConfig, info: ModelInfo) -> Decisions:
    """Every choice of the run, checked against the model: a one-line error for a bad one."""
    layer, layer_reason = _choose_layer(config, info) if config.needs_layer else (None, "")
    preprocessing = choose_preprocessing(config.preprocess, info, config.mean, config.std)
    check_preset_channels(preprocessing.preset, info.channels, preprocessing.mean, preprocessing.std)
    labels = load_labels(config.labels) if config.labels else ()
    if labels and len(labels) != info.num_classes:
        raise UsageError(
            f"labels file {config.labels} has {len(labels)} names but the model has "
            f"{info.num_classes} classes"
        )
    if config.top_k > info.num_classes:
        raise UsageError(f"--top-k {config.top_k} is more than the model's {info.num_classes} classes")
    attention_methods = [name for name in config.methods if REGISTRY[name].family == "attention"]
    if attention_methods:
        check_attention(info, attention_methods)
    return Decisions(
        config=config,
        layer_path=layer.path if layer else None,
        layer_reason=layer_reason,
        preprocessing=preprocessing,
        labels=labels,
        target_class=resolve_class(config.target_class, labels, info.num_classes),
        truth=_truth(config, labels, info.num_classes),
        ground=load_ground_truth(config.truth_masks, config.truth_boxes),
        model_file={"path": str(config.model), "sha256": file_digest(config.model), "format": model_format(config.model)},
    )


def _built(model: keras.Model, info: ModelInfo, decisions: Decisions) -> Prepared:
    """The explainer of ``model`` for the methods, layer and preprocessing decided."""
    config, preprocessing = decisions.config, decisions.preprocessing
    scaling = (custom_scaling(preprocessing.mean, preprocessing.std) if preprocessing.preset == CUSTOM
               else PRESETS[preprocessing.preset])
    methods = {name: REGISTRY[name] for name in config.methods}
    by_family: dict[str, dict[str, Callable]] = {}
    for name, spec in methods.items():
        by_family.setdefault(spec.family, {})[name] = spec.load()
    layer = next(layer for layer in info.layers if layer.path == decisions.layer_path) if decisions.layer_path else None
    wants_attention = any(spec.family == "attention" for spec in methods.values())
    baseline = baseline_input(config.ig_baseline, info, scaling)
    explainer = Explainer(
        build_probe(model, info, decisions.layer_path, attention=wants_attention), info, decisions.layer_path,
        by_family,
        attention_gradients=any(spec.attention_gradients for spec in methods.values()),
        batch_size=config.batch_size,
        options=MethodOptions(
            smoothgrad_samples=config.smoothgrad_samples, smoothgrad_noise=config.smoothgrad_noise,
            ig_steps=config.ig_steps, baseline=baseline,
            scorecam_max_channels=config.scorecam_max_channels,
            head_fusion=config.head_fusion, discard_ratio=config.discard_ratio,
        ),
    )
    return Prepared(decisions=decisions, info=info, layer=layer, scaling=scaling, baseline=baseline,
                    explainer=explainer, lut=COLORMAPS[config.colormap](), intensity=parse_intensity(config.intensity))


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


class Record:
    """The run's predictions table and counts as results come in, whatever engine explains the
    images: rows in input order, the resumed run's rows carried over, outcomes counted, the
    accuracy tallied and the figures averaged for ``run.json``."""

    def __init__(self, prepared: Prepared, writer: PredictionsWriter, carried: dict[str, list[dict[str, object]]],
                 stop: Callable[[], str | None]) -> None:
        self._prepared = prepared
        self._writer = writer
        self._stop = stop
        self.carried = carried  # the resumed run's rows of images not reached yet, by input
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.folders: set[PurePosixPath] = set()  # of the inputs, relative: OUT mirrors them
        self.tally = Tally()
        self.means = Means.empty()
        self.status = "complete"
        self.engine_details: dict[str, object] = {}  # what run.json records under the engine's name

    def add(self, result: ImageResult) -> None:
        """Write the image's rows (or the resumed run's) and count them."""
        if result.carried:
            self._writer.write_records(result.carried)
        else:
            self._writer.write(result.rows)
        self.carried.pop(table_text(result.item.name), None)
        self.folders.add(result.item.relative.parent)
        self.counts[result.outcome] += 1
        self.tally.add(*_labelled(result))
        _add_figures(self.means, result)

    def stopping(self) -> bool:
        """Whether to start no more work: the caller's ``stop`` gave a reason (e.g. 'SIGINT'), or
        ``--fail-fast`` and an image failed. The reason goes into ``status``."""
        reason = self._stop() or ("the first failure (--fail-fast)"
                                  if self._prepared.config.fail_fast and self.counts["failed"] else None)
        if reason:
            self.status = f"stopped by {reason}"
        return reason is not None

    def close(self) -> None:
        """A stopped run keeps the resumed run's rows of the images it did not reach. A complete
        run, with no write under way, removes what writers killed mid-write left in its folders."""
        if self.status != "complete":
            self._writer.write_records(record for rows in self.carried.values() for record in rows)
            return
        out_dir = self._prepared.config.out_dir
        remove_temporary_files(folder for relative in self.folders
                               for folder in (out_dir / relative, out_dir / THUMBNAIL_DIR / relative))


@contextlib.contextmanager
def recorded(prepared: Prepared, engine: str, stop: Callable[[], str | None] = lambda: None) -> Iterator[Record]:
    """Open the run's table and write ``run.json`` ('running'); on leaving, the table is complete
    and ``run.json`` records how the run ended, with counts, figures and timing. ``engine``
    names the loop that explained the images, for ``run.json``."""
    config = prepared.config
    started = time.monotonic()
    carried = previous_rows(config)
    try:
        config.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(config.out_dir / MANIFEST_NAME, manifest(prepared, dict.fromkeys(OUTCOMES, 0), "running", 0.0,
                                                            engine=engine))
        table = config.predictions_path
        stream = open_table(table) if table is not None else _on_stdout_and_kept(config.kept_table_path)
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {config.out_dir}: {exc.strerror or exc}") from None
    with stream as table_stream:
        writer = PredictionsWriter(table_stream, config.table_format, config.top_k, prepared.truth is not None,
                                   config.figures, ranked=config.target == "topk")
        record = Record(prepared, writer, carried, stop)
        yield record
        record.close()
    write_json(config.out_dir / MANIFEST_NAME, manifest(prepared, record.counts, record.status,
                                                        time.monotonic() - started, record.tally, record.means, engine,
                                                        record.engine_details))


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
            "final_activation": prepared.info.final_activation,
            "classes": prepared.info.num_classes,
            "preprocess": prepared.preprocess,
            "preprocess_reason": prepared.preprocess_reason,
            "target_class": prepared.target_class,
        },
        "options": _options(config),
        "engine": engine,
        **({engine: engine_details} if engine_details else {}),
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


