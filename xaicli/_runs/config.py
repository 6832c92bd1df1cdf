"""Run configuration, validated once, and the small parsers the command line shares with it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Iterator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from .._engines import ENGINES
from .._errors import UsageError
from .._evaluation.faithfulness import LABEL_FIGURES, PERTURBATION_METRICS, TRUTH_METRICS, parse_requirements
from .._explain.registry import METHOD_OPTIONS, REGISTRY
from .._inputs.discover import InputImage, discover
from .._inputs.geometry import RESIZE_MODES
from .._inputs.intensity import parse_intensity
from .._inputs.nifti import SLICE_AXES
from .._inputs.raster import DEFAULT_MAX_PIXELS
from .._inputs.scaling import COLOUR_ONLY_PRESETS, PRESETS
from .._inputs.stacks import parse_slices
from .._outputs.naming import IMAGE_FORMATS, SAVE_KINDS, VOLUME_KINDS, table_path
from .._outputs.render import COLORMAPS
from .._outputs.table import TABLE_FORMATS
from .._storage import Store
from .regions import parse_region

AUTO = "auto"
CUSTOM = "custom"
EXISTING = ("refuse", "overwrite", "skip", "resume")
TARGETS = {
    "auto": "positive for a multi-label model, predicted for the others",
    "predicted": "each image's top class (a regression's value), or the --class given",
    "topk": "each of the image's --top-k classes, one output per rank (name.<method>.top1.png, ...)",
    "positive": "a multi-label model's labels at or above --threshold, one output per label "
                "(name.<method>.<label>.png); an image with none gets one row that says so",
}
SIGNS = {"positive": "what increases the value", "negative": "what decreases it"}
DEFAULT_THRESHOLD = 0.5


def default_workers() -> int:
    """Decode/encode threads: enough to keep the model fed on small machines, at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True, kw_only=True)
class _Explaining:
    """The options about explaining that are not a method's own (``ExplainOptions`` adds those)."""

    methods: tuple[str, ...] = ("gradcam",)
    layer: str = AUTO
    layer_regex: str = "conv"
    target_class: str | None = None  # index or label name; None = each image's top class
    target: str = AUTO  # TARGETS: predicted, topk (each of the top_k classes), positive (labels over threshold)
    threshold: float | None = None  # multi-label: a label is present at this probability (None: DEFAULT_THRESHOLD)
    sign: str | None = None  # regression: explain what increases (positive, the default) or decreases the value
    background: str | None = None  # segmentation: the class not explained (index, label or 'none'; None: auto)
    region: str = "predicted"  # segmentation: where a class's scores are summed (targets.REGION_SOURCES)
    top_k: int = 0  # extra table columns for the K best classes
    batch_size: int = 16
    alpha: float = 0.4
    colormap: str = "jet"
    preprocess: str = AUTO
    resize: str = "stretch"
    mean: tuple[float, ...] | None = None  # --preprocess custom, on the 0..1 scale
    std: tuple[float, ...] | None = None
    input_size: tuple[int, ...] | None = None  # (H, W), or a volume model's (D, H, W)
    output: str = AUTO  # 'auto', or the index or name of the model output to explain
    kind: str = AUTO  # what that output is (kinds.KINDS), 'auto' from its shape and activation
    unsafe: bool = False  # allow Lambda layers holding Python code
    custom_objects: str | None = None  # a .py file or module defining custom layers
    labels: Path | tuple[str, ...] | None = None  # a file of class names, or the names
    max_pixels: int = DEFAULT_MAX_PIXELS
    intensity: str = "auto"  # how images deeper than 8 bits reach 0..255 (intensity.KINDS)
    max_size: int | None = None  # long side of image outputs at most this; None = the original size

    @property
    def store(self) -> Store | None:
        """Where the files are put once written (an output folder on a store); None: they stay
        where they are written (always, but for a run's ``RunConfig``)."""
        return None

    @property
    def inputs_on_store(self) -> bool:
        """Whether the inputs are fetched from a store (never, but for a run's ``RunConfig``)."""
        return False

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in REGISTRY]
        if unknown or not self.methods:
            raise UsageError(f"unknown method {unknown[0] if unknown else '(empty)'!r}; choose from {', '.join(REGISTRY)}")
        if len(set(self.methods)) != len(self.methods):
            raise UsageError(f"--method lists a method twice: {','.join(self.methods)}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UsageError(f"--alpha must be between 0 and 1, got {self.alpha}")
        if self.colormap not in COLORMAPS:
            raise UsageError(f"unknown colormap {self.colormap!r}; choose from {', '.join(COLORMAPS)}")
        if self.preprocess not in (AUTO, CUSTOM, *PRESETS):
            raise UsageError(f"unknown preprocessing {self.preprocess!r}; choose from auto, {', '.join(PRESETS)}, custom")
        if (self.preprocess == CUSTOM) != (self.mean is not None and self.std is not None):
            raise UsageError("--preprocess custom goes with both --mean and --std, and they with it")
        if self.std is not None and any(value <= 0 for value in self.std):
            raise UsageError(f"--std values must be positive, got {','.join(map(str, self.std))}")
        parse_intensity(self.intensity)  # a one-line error for a bad choice, before the model loads
        if isinstance(self.labels, Path) and not self.labels.is_file():
            raise UsageError(f"--labels {self.labels}: no such file; give a text file of class names, one per line, "
                             "or a JSON list")
        if self.custom_objects and self.custom_objects.endswith(".py") and not Path(self.custom_objects).is_file():
            raise UsageError(f"--custom-objects {self.custom_objects}: no such file; give a Python file or a module name")
        if self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.max_size is not None and self.max_size < 16:
            raise UsageError(f"--max-size must be at least 16 pixels, got {self.max_size}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"unknown --resize {self.resize!r}; choose from {', '.join(RESIZE_MODES)}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be 0 or more, got {self.top_k}")
        if self.target not in TARGETS:
            raise UsageError(f"unknown --target {self.target!r}; choose from {', '.join(TARGETS)}")
        if self.target == "topk" and (self.top_k < 1 or self.target_class is not None):
            raise UsageError("--target topk explains each of the --top-k classes: give --top-k K (e.g. 3) "
                             "and no --class")
        if self.target == "positive" and self.target_class is not None:
            raise UsageError("--target positive explains each label over --threshold; --class explains one label for "
                             "every image: give one of them")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.sign is not None and self.sign not in SIGNS:
            raise UsageError(f"unknown --sign {self.sign!r}; choose from {', '.join(SIGNS)}")
        parse_region(self.region)

        for _method, option in METHOD_OPTIONS:
            option.check(getattr(self, option.name))

    @property
    def needs_layer(self) -> bool:
        """True when a method that works on a convolutional layer is asked for."""
        return any(REGISTRY[name].needs_layer for name in self.methods)

    @property
    def method_options(self) -> dict[str, object]:
        """Every method's own options (``METHOD_OPTIONS``) with this configuration's values."""
        return {option.name: getattr(self, option.name) for _method, option in METHOD_OPTIONS}


# The methods declare their own options (registry.METHOD_OPTIONS); each becomes a field here, so a
# new method's option is a keyword of the Python API, a config key and a run.json entry by itself.
ExplainOptions = make_dataclass(
    "ExplainOptions", [(option.name, option.type if option.default is not None else option.type | None,
                        field(default=option.default)) for _method, option in METHOD_OPTIONS],
    bases=(_Explaining,), frozen=True, kw_only=True)
ExplainOptions.__module__ = __name__  # where pickle (Ray's replicas) finds it; make_dataclass's module= is 3.12's
ExplainOptions.__doc__ = """How images are explained and drawn, wherever they come from: ``xaicli.Explainer``'s options,
    and the part of a run's ``RunConfig`` about explaining, with a field for each method's own option.
    Built with keyword arguments; it checks itself (a ``UsageError`` with the command line's message
    for a bad value)."""


@dataclass(frozen=True, kw_only=True)
class RunConfig(ExplainOptions):
    """Everything one ``xai run`` needs: the explaining options, and the model file, the inputs, the output
    folder and how the run goes. Built with keyword arguments; it checks itself."""

    model: Path
    inputs: tuple[Path | str, ...]  # local paths, or URLs of a store ('s3://bucket/prefix')
    out_dir: Path  # the output folder; for an output on a store, the local spool its files are put from
    out_url: str | None = None  # the output folder on a store ('s3://bucket/prefix'), or None
    spool: Path | None = None  # where inputs on a store are fetched to and OUT's files written before their put
    dicom: bool = False  # also find files without an image suffix whose DICOM preamble is there
    slices: str = "nonzero"  # which slices of a volume (frames of a DICOM) to explain (stacks.SLICE_CHOICES)
    slice_axis: str = "axial"  # NIfTI volumes are cut across this axis (nifti.SLICE_AXES)
    report: bool = True  # write OUT/index.html and the thumbnails it shows
    true_labels: str | None = None  # 'folder' (the parent folder's name) or a CSV of path,label
    summary: Path | None = None  # a Markdown summary of the run for a CI job page
    metrics: tuple[str, ...] = ()  # deletion, insertion (faithfulness.PERTURBATION_METRICS)
    metric_steps: int = 20  # steps of the deletion and insertion curves
    truth_masks: Path | None = None  # a folder of object masks mirroring the inputs
    truth_boxes: Path | None = None  # a JSON file: relative path -> [[x0, y0, x1, y1], ...]
    pointing_tolerance: float = 15.0  # pixels around the map's peak that still hit the object
    require: str | None = None  # CI gates on the figures' means, e.g. 'pointing>=0.9,deletion<=0.2'
    workers: int | None = None  # local: decode/write threads (None: default_workers()); ray: model replicas
    engine: str = "local"  # the loop around the images: local threads, or Ray Data (_engines.ENGINES)
    ray_address: str | None = None  # --engine ray: None starts Ray here; 'auto' or 'ray://host:port' joins a cluster
    gpus_per_worker: float = 0.0  # --engine ray: the GPU share each replica asks for
    save: tuple[str, ...] = ("overlay",)  # which files to write per image and method
    image_format: str = "png"  # overlays, heatmaps and panels: png, jpeg or webp
    memory_budget: int = 256  # MiB of decoded originals and decode/render work in flight
    existing: str = "refuse"  # outputs already there: refuse, overwrite, skip those images, or resume the run
    fail_fast: bool = False  # stop after the batch of the first image that fails
    table_format: str = "csv"  # predictions table: csv or jsonl
    predictions: str | None = None  # where the table goes: a path, '-' for stdout, None for OUT

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("no inputs: give image files or folders after the model")
        super().__post_init__()
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        self._check_engine()
        parse_slices(self.slices)
        self._check_metrics()
        if self.true_labels is not None and self.true_labels != "folder" and not Path(self.true_labels).is_file():
            raise UsageError(f"--true-labels {self.true_labels}: give 'folder' or an existing CSV file of path,label")
        if self.slice_axis not in SLICE_AXES:
            raise UsageError(f"unknown --slice-axis {self.slice_axis!r}; choose from {', '.join(SLICE_AXES)}")
        unknown_kinds = [kind for kind in self.save if kind not in SAVE_KINDS and kind not in VOLUME_KINDS]
        if unknown_kinds or not self.save:
            raise UsageError(f"--save {','.join(self.save) or '(empty)'}: choose from {', '.join(SAVE_KINDS)} "
                             f"(a volume model's: {', '.join(VOLUME_KINDS)})")
        if self.image_format not in IMAGE_FORMATS:
            raise UsageError(f"unknown --image-format {self.image_format!r}; choose from {', '.join(IMAGE_FORMATS)}")
        if self.memory_budget < 16:
            raise UsageError(f"--memory-budget must be at least 16 (MiB), got {self.memory_budget}")
        if self.existing not in EXISTING:
            raise UsageError(f"unknown handling of existing outputs {self.existing!r}")
        if self.table_format not in TABLE_FORMATS:
            raise UsageError(f"unknown --format {self.table_format!r}; choose from {', '.join(TABLE_FORMATS)}")

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown --engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        if self.engine != "ray" and (self.ray_address is not None or self.gpus_per_worker):
            given = "--ray-address" if self.ray_address is not None else "--gpus-per-worker"
            raise UsageError(f"{given} goes with --engine ray")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise UsageError(f"--gpus-per-worker above 1 must be a whole number (Ray's rule), got {self.gpus_per_worker}")

    def _check_metrics(self) -> None:
        unknown = [name for name in self.metrics if name not in PERTURBATION_METRICS]
        if unknown:
            raise UsageError(f"unknown --metrics {unknown[0]!r}; choose from {', '.join(PERTURBATION_METRICS)} "
                             f"(pointing, energy and iou come with --truth-masks or --truth-boxes)")
        if self.metric_steps < 1:
            raise UsageError(f"--metric-steps must be at least 1, got {self.metric_steps}")
        if self.pointing_tolerance < 0:
            raise UsageError(f"--pointing-tolerance must be 0 or more, got {self.pointing_tolerance}")
        if self.truth_masks is not None and self.truth_boxes is not None:
            raise UsageError("--truth-masks and --truth-boxes contradict each other; give one")
        if self.truth_masks is not None and not self.truth_masks.is_dir():
            raise UsageError(f"--truth-masks {self.truth_masks}: not a folder; give the folder of masks that "
                             "mirrors the inputs")
        if self.truth_boxes is not None and not self.truth_boxes.is_file():
            raise UsageError(f"--truth-boxes {self.truth_boxes}: no such file; give a JSON file of boxes")
        computed = set(self.metrics) | (set(LABEL_FIGURES) if self.true_labels else set()) | (
            set(TRUTH_METRICS) if self.truth_masks or self.truth_boxes else set())
        for requirement in parse_requirements(self.require or ""):
            if requirement.figure not in computed:
                how = {"accuracy": "--true-labels", "f1": "--true-labels", "deletion": "--metrics deletion",
                       "insertion": "--metrics insertion"}.get(requirement.figure, "--truth-masks or --truth-boxes")
                raise UsageError(f"--require {requirement}: this run does not compute {requirement.figure}; "
                                 f"add {how}")

    @property
    def figures(self) -> tuple[str, ...]:
        """The per-image figures this run computes, in column order."""
        truth = tuple(TRUTH_METRICS) if self.truth_masks or self.truth_boxes else ()
        return tuple(name for name in PERTURBATION_METRICS if name in self.metrics) + truth

    @property
    def predictions_path(self) -> Path | None:
        """Where the predictions table is written; None means standard output."""
        if self.predictions == "-":
            return None
        return table_path(self.out_dir, self.table_format, self.predictions)

    @property
    def store(self) -> Store | None:
        """The output folder on a store (its files put from ``out_dir``), or None for a local folder."""
        return Store(self.out_url, self.out_dir) if self.out_url else None

    @property
    def inputs_on_store(self) -> bool:
        return any(isinstance(entry, str) for entry in self.inputs)

    def images(self) -> Iterator[InputImage]:
        """The inputs' images, streamed anew by each call: folders walked (OUT not entered), a
        store's prefixes listed (``discover``)."""
        return discover(self.inputs, exclude=[self.out_url or self.out_dir], dicom=self.dicom, spool=self.spool)

    def shown(self, path: Path) -> str:
        """A file of the run as rows and messages name it: its URL when the output folder is on a
        store, else its path."""
        store = self.store
        return store.url_of(path) if store and store.holds(path) else str(path)

    def local(self, shown: str) -> Path:
        """``shown``'s inverse: the file a row's output names, in ``out_dir`` when it is on the store."""
        if self.out_url and shown.startswith(self.out_url + "/"):
            return self.out_dir / shown[len(self.out_url) + 1:]
        return Path(shown)

    @property
    def kept_table_path(self) -> Path:
        """Where the run's table is read back from (``--resume``, the page): the table itself, or
        the copy kept in OUT when it goes to standard output."""
        return table_path(self.out_dir, self.table_format, self.predictions)



def option_values(config: RunConfig) -> dict[str, object]:
    """Every option's value, JSON-ready, as run.json records it: the output folder as given (a
    store's URL, not the spool)."""
    values = {field.name: _plain(getattr(config, field.name)) for field in fields(config)
              if field.name not in ("out_url", "spool")}
    return {**values, "out_dir": config.out_url or values["out_dir"]}


def _plain(value: object) -> object:
    """JSON-ready: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def parse_names(text: str) -> tuple[str, ...]:
    """A comma-separated option value as lower-case names: 'GradCAM, saliency' -> ('gradcam', 'saliency')."""
    return tuple(part.strip().lower() for part in text.split(",") if part.strip())


def parse_size(text: str) -> tuple[int, ...]:
    """'224x160' (height x width) -> (224, 160); a volume model's '64x128x128' (depth x height x
    width) -> (64, 128, 128)."""
    sizes = [part.strip() for part in text.lower().split("x")]
    if len(sizes) not in (2, 3) or not all(size.isdigit() and int(size) >= 1 for size in sizes):
        raise UsageError(f"--input-size {text!r}: give HEIGHTxWIDTH in pixels, e.g. 224x224 (a volume model's "
                         "DEPTHxHEIGHTxWIDTH in voxels, e.g. 64x128x128)")
    return tuple(int(size) for size in sizes)


def load_labels(path: Path) -> tuple[str, ...]:
    """Class names from a text file (one per line), a JSON list, or a JSON object
    mapping index to name (``{"0": "cat"}``; missing indices become their number)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read labels file {path}: {exc}") from None
    if path.suffix.lower() != ".json":
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"labels file {path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return tuple(str(name) for name in data)
    if isinstance(data, dict) and all(str(k).isdigit() for k in data):
        names = {int(k): str(v) for k, v in data.items()}
        return tuple(names.get(i, str(i)) for i in range(max(names, default=-1) + 1))
    raise UsageError(f"labels file {path}: expected a list of names or an object of index -> name")


def resolve_class(spec: str | None, labels: tuple[str, ...], num_classes: int) -> int | None:
    """Turn ``--class`` (an index or a label name) into an index in [0, num_classes)."""
    if spec is None:
        return None
    if spec.lstrip("-").isdigit():
        index = int(spec)
    elif spec in labels:
        index = labels.index(spec)
    else:
        more = f", … and {len(labels) - 10} more" if len(labels) > 10 else ""
        known = f"; labels: {', '.join(labels[:10])}{more}" if labels else "; give an index or pass --labels"
        raise UsageError(f"--class {spec!r} is not a class index or a known label{known}")
    if not 0 <= index < num_classes:
        raise UsageError(f"--class {index} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")
    return index


def check_preset_channels(preset: str, channels: int, mean: tuple[float, ...] | None,
                          std: tuple[float, ...] | None) -> None:
    """torch/caffe presets carry per-RGB-channel constants; custom ones have one value or one
    per channel."""
    if preset in COLOUR_ONLY_PRESETS and channels != 3:
        raise UsageError(f"--preprocess {preset} needs an RGB model; this model takes {channels} channel(s)")
    for name, values in (("--mean", mean), ("--std", std)):
        if preset == CUSTOM and len(values or ()) not in (1, channels):
            raise UsageError(f"{name} has {len(values)} values; the model takes {channels} channel(s): give 1 or {channels}")


def parse_numbers(text: str) -> tuple[float, ...]:
    """'0.485, 0.456,0.406' -> (0.485, 0.456, 0.406)."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not a comma-separated list of numbers") from None


def read_config_file(path: Path) -> dict[str, object]:
    """The settings of a TOML config file, keyed as written: long option names, where
    ``batch-size`` and ``batch_size`` mean the same."""
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise UsageError(f"config file {path}: [{nested[0]}] tables are not used; write the keys at the top level")
    return data
