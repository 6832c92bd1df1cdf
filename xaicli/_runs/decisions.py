"""A run's decisions, made once before any image is read (layer, preprocessing, classes, labels,
ground truth), and the model and explainer built to follow them. Never prints."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from .._errors import UsageError
from .._evaluation.truth import GroundTruth, Truth, check_known, load_ground_truth, load_truth
from .._explain.contexts import MethodOptions
from .._explain.explainer import Explainer
from .._explain.registry import REGISTRY
from .._explain.targets import Target, label_tags, targets_of
from .._inputs.intensity import Intensity, parse_intensity
from .._inputs.scaling import PRESETS, Scaling, custom_scaling
from .._models.files import check_model_path
from .._models.info import LayerInfo, ModelInfo
from .._models.inspect import inspect_model, open_model
from .._inputs.volumes import takes_volumes
from .._models.layers import auto_layer, candidate_layers, resolve_layer
from .._models.load import model_format
from .._models.preprocessing import Preprocessing, choose_preprocessing
from .._models.probe import build_probe
from .._outputs.naming import SAVE_KINDS, volume_kinds
from .._outputs.render import COLORMAPS
from .._outputs.writers import file_digest
from .config import (AUTO, CUSTOM, DEFAULT_THRESHOLD, ExplainOptions, RunConfig, check_preset_channels, load_labels,
                     resolve_class)


@dataclass(frozen=True)
class Decisions:
    """A run's choices as plain data, settled once before any image is read: what every engine,
    and every replica of the model on a cluster, follows."""

    config: ExplainOptions  # a RunConfig for a run
    layer_path: str | None  # None when no method needs a layer
    layer_reason: str  # why that layer ('auto: end of the last conv block ...' or 'as requested')
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    target_class: int | None
    targets: tuple[Target, ...]  # what each image's maps explain: its best class, the one given, or each of the top K
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
    def config(self) -> ExplainOptions:
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
    def targets(self) -> tuple[Target, ...]:
        return self.decisions.targets

    @property
    def output_tags(self) -> tuple[str, ...]:
        """Every tag the run's files may have (top1.., a label's name; '' for one map per method)."""
        return tuple(tag for target in self.decisions.targets for tag in target.possible_tags)

    @property
    def dynamic_targets(self) -> bool:
        """The classes explained depend on each image's prediction (the labels present)."""
        return any(target.depends_on_prediction for target in self.decisions.targets)

    @property
    def truth(self) -> Truth | None:
        return self.decisions.truth

    @property
    def ground(self) -> GroundTruth | None:
        return self.decisions.ground

    @property
    def model_file(self) -> dict[str, str]:
        return self.decisions.model_file

    def output_exists(self, path: Path) -> bool:
        """Whether an output file of the run is there already: on disk, or, for an output folder on
        a store, in the one listing of it taken when first asked (before this run wrote there)."""
        return path in self._stored if self.config.store else path.exists()

    @functools.cached_property
    def _stored(self) -> frozenset[Path]:
        store = self.config.store
        return frozenset(store.spool / relative for relative in store.listing())


def prepare(config: RunConfig) -> Prepared:
    """Load and inspect the run's model and settle every choice before any image is read."""
    model, info = _open(config)
    return build(model, info, decide_run(config, info))


def prepare_decided(decisions: Decisions) -> Prepared:
    """The model loaded again to follow choices made elsewhere (a replica of the run's model on
    a Ray worker): the same loading options, layer, preprocessing and classes."""
    model, info = _open(decisions.config)
    return build(model, info, decisions)


def prepare_model(model: keras.Model | Path, options: ExplainOptions) -> Prepared:
    """A model file, or a ``keras.Model`` in memory (used as it is), inspected and ready to explain
    with ``options``: the API's ``Explainer``."""
    loaded, info = opened_model(model, input_size=options.input_size, output=options.output, kind=options.kind,
                                unsafe=options.unsafe, custom_objects=options.custom_objects)
    check_volume_head(info)
    model_file = _model_file(model) if isinstance(model, Path) else {"path": "", "sha256": "",
                                                                     "format": "keras.Model in memory"}
    return build(loaded, info, decide(options, info, model_file))


def opened_model(model: keras.Model | Path, input_size: tuple[int, int] | None = None, output: str = AUTO,
                 kind: str = AUTO, unsafe: bool = False,
                 custom_objects: str | None = None) -> tuple[keras.Model, ModelInfo]:
    """A model file loaded (its path checked first, with the one-line reasons) or a model in
    memory taken as it is, and inspected."""
    if isinstance(model, keras.Model):
        return model, inspect_model(model, input_size, output, kind)
    check_model_path(model)
    return open_model(model, input_size=input_size, output=output, kind=kind, unsafe=unsafe,
                      custom_objects=custom_objects)


def _open(config: RunConfig) -> tuple[keras.Model, ModelInfo]:
    return open_model(config.model, input_size=config.input_size, output=config.output, kind=config.kind,
                      unsafe=config.unsafe, custom_objects=config.custom_objects)


def _model_file(path: Path) -> dict[str, str]:
    """What run.json says of the model file: its path, SHA-256 and format."""
    return {"path": str(path), "sha256": file_digest(path), "format": model_format(path)}


def decide(options: ExplainOptions, info: ModelInfo, model_file: dict[str, str]) -> Decisions:
    """Every choice about explaining, checked against the model: a one-line error for a bad one."""
    layer, layer_reason = _choose_layer(options, info) if options.needs_layer else (None, "")
    preprocessing = choose_preprocessing(options.preprocess, info, options.mean, options.std)
    check_preset_channels(preprocessing.preset, info.channels, preprocessing.mean, preprocessing.std)
    labels = _labels(options.labels, info.num_classes)
    attention_methods = [name for name in options.methods if REGISTRY[name].family == "attention"]
    if attention_methods:
        check_attention(info, attention_methods)
    target_class, targets = chosen_targets(options, labels, info)
    return Decisions(
        config=options,
        layer_path=layer.path if layer else None,
        layer_reason=layer_reason,
        preprocessing=preprocessing,
        labels=labels,
        target_class=target_class,
        targets=targets,
        truth=None,
        ground=None,
        model_file=model_file,
    )


def chosen_targets(options: ExplainOptions, labels: tuple[str, ...],
                   info: ModelInfo) -> tuple[int | None, tuple[Target, ...]]:
    """``--class``'s index (None without it) and what each image's maps explain, the classes asked
    for checked against the model's."""
    check_kind_options(options, info)
    if options.top_k > info.num_classes:
        raise UsageError(f"--top-k {options.top_k} is more than the model's {info.num_classes} classes")
    target_class = resolve_class(options.target_class, labels, info.num_classes)
    threshold = DEFAULT_THRESHOLD if options.threshold is None else options.threshold
    independent = info.per_pixel_sigmoid and info.units > 1
    return target_class, targets_of(options.target, options.top_k, target_class, info.kind, threshold,
                                    label_tags(labels, info.num_classes), background_class(options, labels, info),
                                    independent, options.region)


def background_class(options: ExplainOptions, labels: tuple[str, ...], info: ModelInfo) -> int | None:
    """A segmentation's class that is not explained (``--background``): an index, a label or
    'none'; by default 0, except for independent sigmoid channels, which have none."""
    if options.background is None:
        return None if info.per_pixel_sigmoid and info.units > 1 else 0
    if options.background.strip().lower() == "none":
        return None
    try:
        return resolve_class(options.background, labels, info.num_classes)
    except UsageError as error:
        raise UsageError(str(error).replace("--class", "--background", 1)) from None


def check_kind_options(options: ExplainOptions, info: ModelInfo) -> None:
    """Options that only some kinds of output have (``--sign``, ``--threshold``, ``--target
    positive``, ranking classes) refused in one line for the others."""
    kind = f"this model's output is {info.kind} ({info.kind_reason})"
    if options.sign is not None and info.kind != "regression":
        raise UsageError(f"--sign says which way a regression's value is explained; {kind}")
    independent = info.kind == "multilabel" or (info.per_pixel_sigmoid and info.units > 1)
    if not independent and (options.threshold is not None or options.target == "positive"):
        given = "--threshold" if options.threshold is not None else "--target positive"
        raise UsageError(f"{given} goes with a multi-label model (several sigmoid units, or sigmoid channels of a "
                         f"segmentation); {kind}; say --kind multilabel if its units are independent labels")
    if info.kind == "regression" and (options.target == "topk" or options.top_k):
        raise UsageError(f"--top-k ranks classes by probability; {kind}: explain one of its values with --class")
    if info.kind == "segmentation" and (options.target in ("topk", "positive") or options.top_k):
        given = f"--target {options.target}" if options.target in ("topk", "positive") else "--top-k"
        raise UsageError(f"{given} ranks an image's classes; {kind}, whose classes are explained over their "
                         "regions: each class in the predicted mask, or the one --class names")
    if options.background is not None and info.kind != "segmentation":
        raise UsageError(f"--background names the class a segmentation does not explain; {kind}")
    if options.region != "predicted" and info.kind != "segmentation":
        raise UsageError(f"--region says where a segmentation's class is explained; {kind}")


def check_run_kind_options(config: RunConfig, info: ModelInfo, dynamic_targets: bool) -> None:
    """A run's options that some kinds of output cannot follow, refused in one line."""
    kind = f"this model's output is {info.kind} ({info.kind_reason})"
    if info.kind == "regression" and config.metrics:
        raise UsageError(f"--metrics {','.join(config.metrics)} follow a class's probability; {kind}, which has none")
    if info.kind in ("regression", "segmentation") and config.true_labels is not None:
        compared = "values" if info.kind == "regression" else "masks"
        raise UsageError(f"--true-labels gives an image's classes; {kind}, whose {compared} are not compared with them")
    if config.region == "truth" and config.truth_masks is None:
        raise UsageError("--region truth takes each image's regions from --truth-masks: give the folder of label "
                         "maps (PNGs whose pixel values are the classes, mirroring the inputs)")
    if dynamic_targets and config.existing == "skip":
        raise UsageError("--skip-existing cannot know which labels an image's files are for before the model "
                         "predicts it; continue a stopped run with --resume, or replace the outputs with --overwrite")


def decide_run(config: RunConfig, info: ModelInfo) -> Decisions:
    """A run's choices: those about explaining, and the ground truth read and checked."""
    config = with_file_kinds(config, info)
    decisions = decide(config, info, _model_file(config.model))
    check_run_kind_options(config, info, any(t.depends_on_prediction for t in decisions.targets))
    return replace(decisions, truth=_truth(config, decisions.labels, info),
                   ground=load_ground_truth(config.truth_masks, config.truth_boxes))


def with_file_kinds(config: RunConfig, info: ModelInfo) -> RunConfig:
    """``config`` with the files its model's maps are written as: a 3-D model's
    (``volume_kinds``: the map over the scan always), whose run refuses in one line the options
    that do not reach volumes; a 2-D model's ``--save`` as given, refused when it names a
    volume's file."""
    if not info.takes_volumes:
        volume_only = [kind for kind in config.save if kind not in SAVE_KINDS]
        if volume_only:
            raise UsageError(f"--save {','.join(volume_only)}: files of a 3-D model's map; this model takes 2-D "
                             f"images: choose from {', '.join(SAVE_KINDS)}")
        return config
    model = takes_volumes(info.input_size)
    flat = [kind for kind in config.save if kind in ("heatmap", "panel")]
    if flat:
        raise UsageError(f"--save {','.join(flat)}: 2-D pictures; {model}: its map is written over the scan "
                         "(.nii.gz), with --save overlay (.ortho and .mosaic pictures) and raw (.npy)")
    not_yet = {"--truth-masks": config.truth_masks is not None, "--truth-boxes": config.truth_boxes is not None}
    given = [option for option, asked in not_yet.items() if asked]
    if given:
        raise UsageError(f"{given[0]} is not supported on volumes yet; {model}: run again without it")
    check_volume_head(info)
    return replace(config, save=volume_kinds(config.save))


def check_volume_head(info: ModelInfo) -> None:
    """Refuse, in one line, a 3-D model's output that volumes cannot be explained by yet."""
    if info.takes_volumes and info.kind == "segmentation":
        raise UsageError(f"a 3-D model's per-voxel output is not supported yet; {takes_volumes(info.input_size)}: "
                         "explain one of its image-level outputs with --output")


def _labels(given: Path | tuple[str, ...] | None, classes: int) -> tuple[str, ...]:
    """The class names from a file or as given, one per class of the model."""
    if given is None:
        return ()
    labels = load_labels(given) if isinstance(given, Path) else tuple(given)
    where = f"labels file {given}" if isinstance(given, Path) else "labels"
    if labels and len(labels) != classes:
        raise UsageError(f"{where} has {len(labels)} names but the model has {classes} classes")
    repeated = next((name for position, name in enumerate(labels) if name in labels[:position]), None)
    if repeated is not None:
        raise UsageError(f"{where} names {repeated!r} twice; each class needs its own name")
    return labels


def build(model: keras.Model, info: ModelInfo, decisions: Decisions) -> Prepared:
    """The explainer of ``model`` for the methods, layer and preprocessing decided."""
    config, preprocessing = decisions.config, decisions.preprocessing
    scaling = (custom_scaling(preprocessing.mean, preprocessing.std) if preprocessing.preset == CUSTOM
               else PRESETS[preprocessing.preset])
    methods = {name: REGISTRY[name] for name in config.methods}
    by_family: dict[str, dict[str, Callable]] = {}
    for name, spec in methods.items():
        by_family.setdefault(spec.family, {})[name] = spec.compute
    layer = next(layer for layer in info.layers if layer.path == decisions.layer_path) if decisions.layer_path else None
    wants_attention = any(spec.family == "attention" for spec in methods.values())
    baseline = baseline_input(config.ig_baseline, info, scaling)
    explainer = Explainer(
        build_probe(model, info, decisions.layer_path, attention=wants_attention), info, decisions.layer_path,
        by_family,
        attention_gradients=any(spec.attention_gradients for spec in methods.values()),
        sign=-1.0 if config.sign == "negative" else 1.0,
        batch_size=config.batch_size,
        options=MethodOptions(config.method_options, baseline=baseline),
    )
    return Prepared(decisions=decisions, info=info, layer=layer, scaling=scaling, baseline=baseline,
                    explainer=explainer, lut=COLORMAPS[config.colormap](), intensity=parse_intensity(config.intensity))


def _truth(config: RunConfig, labels: tuple[str, ...], info: ModelInfo) -> Truth | None:
    """``--true-labels`` read (a multi-label model's rows may list several labels, ';'-separated),
    every image's label checked before any image is explained."""
    if config.true_labels is None:
        return None
    truth = load_truth(config.true_labels, several=info.kind == "multilabel")
    check_known(truth, config.images(), labels, info.num_classes)
    return truth


def _choose_layer(config: ExplainOptions, info: ModelInfo) -> tuple[LayerInfo, str]:
    """The target layer and why: ``--layer auto``'s structural choice, or the one asked for."""
    if config.layer == AUTO:
        layer, reason = auto_layer(info, config.layer_regex)
        return layer, f"auto: {reason}"
    return resolve_layer(info, config.layer, config.layer_regex), "as requested"


def check_attention(info: ModelInfo, requested: list[str]) -> None:
    """Attention methods need attention layers and a patch grid the tokens map onto."""
    asked = f"--method {','.join(requested)}"
    fitting = ", ".join(name for name, spec in REGISTRY.items() if spec.family != "attention")
    if info.takes_volumes:
        raise UsageError(f"{asked} follows a 2-D Vision Transformer's patch tokens and cannot work on a 3-D model; "
                         f"methods that do: {fitting}")
    if not info.attention_layers:
        raise UsageError(f"{asked} needs a Vision Transformer (attention layers: Keras's "
                         f"MultiHeadAttention at any depth, or vit_keras's); this model has none; methods that fit it: {fitting}")
    if info.token_grid is None:
        raise UsageError(f"{asked} cannot place this model's attention on the image: {info.attention_note}")


VOLUME_INPUT = ("volumes (D, H, W): a NIfTI file turned to RAS, the model's D, H, W being its i (to the right), "
                "j (to anterior), k (to superior), resampled trilinearly")


def describe(path: Path | str, info: ModelInfo, layer_regex: str) -> dict:
    """What ``xai info`` reports, as plain JSON-ready values."""
    candidates = candidate_layers(info, layer_regex)
    auto, auto_reason = auto_layer(info, layer_regex) if candidates else (None, "")
    preprocessing = choose_preprocessing(AUTO, info)
    usable = [name for name, spec in REGISTRY.items()
              if (candidates or not spec.needs_layer) and (spec.family != "attention" or info.token_grid)]
    return {
        "model": str(path),
        "format": model_format(path) if isinstance(path, Path) else "keras.Model in memory",
        "input_shape": [*info.input_size, info.channels],
        "takes": VOLUME_INPUT if info.takes_volumes else "images (H, W)",
        "outputs": [{"index": o.index, "layer": o.head_path, "shape": list(o.shape), "activation": o.final_activation,
                     "kind": o.kind, "explainable": o.explainable} for o in info.outputs],
        "explained_output": info.head_path,
        "output_choice": info.output_reason,
        "kind": info.kind,
        "kind_reason": info.kind_reason,
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
    """The integrated-gradients baseline in model-input units: (H, W, C) float32, a 3-D model's (D, H, W, C)."""
    shape = (*info.input_size, info.channels)
    if name == "zeros":
        return np.zeros(shape, np.float32)
    pixel = {"black": 0.0, "white": 255.0, "gray": 127.5}[name]
    return scaling(np.full(shape, pixel, np.float32)).astype(np.float32)
