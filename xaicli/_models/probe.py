"""The probe: one Functional model that, from one call, returns the pre-activation logits of the
explained output, the target layer's activations and, for transformers, attention scores.

It is built by re-threading the user's layers through a new ``keras.Input``: calling
``keras.Model(m.inputs, inner_layer.output)`` fails or gives ``None`` gradients for reloaded
Sequential models and nested sub-models, while re-threading works for both (see DESIGN.md). Each
nested Functional model is re-threaded on a fresh input of its own and wrapped as a sub-model
whose extra outputs are the tapped tensors, so those taps stay connected to the outer input. The
same tracing, recording every layer, is how ``inspect`` learns the model's layers and graph.

Weights are shared with the loaded model, never copied, except for the small linear twin of an
output layer that has its softmax/sigmoid built in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import keras
import tensorflow as tf
from keras.src.models.functional import Functional

from .._errors import ModelError
from .capture import capturing, inner_layers

if TYPE_CHECKING:
    from .info import ModelInfo


SQUASHING = ("softmax", "sigmoid")


def final_activation(layer: keras.layers.Layer) -> str:
    """'softmax' or 'sigmoid' when ``layer`` squashes its output that way, else 'linear'."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return name if name in SQUASHING else "linear"


class Probe:
    """Maps a (N, H, W, C) float32 batch to ``{"logits": (N, units)}``, plus ``"activations"`` of
    the target layer when there is one ((N, h, w, k), or (N, T, D) for a token layer), plus
    ``"attention"``: the (N, heads, T, T) weights of every attention layer, in call order, when
    asked for. Graph layers come from the re-threaded Functional model; layers inside
    subclassed layers, and attention weights, are captured while it runs (see ``capture``)."""

    def __init__(self, model: keras.Model, inner_target: dict[str, keras.layers.Layer],
                 attention: dict[str, keras.layers.Layer], activation_shape: tuple[int | None, ...] | None,
                 twin_of: dict[int, keras.layers.Layer] | None = None):
        self._model = model
        self._twin_of = twin_of or {}  # id(linear twin of the head) -> the head
        self._inner_target = inner_target
        self._attention = attention
        self.activation_shape = activation_shape

    def weighted_layers(self) -> list[keras.layers.Layer]:
        """The layers whose trainable weights the maps are computed with, from the input to the
        output, nested models' layers in their place (a layer inside a subclassed layer goes with
        its owner). The head whose pre-activation output the probe computes with a linear twin
        is represented by that twin, which holds a copy of its weights."""
        found: list[keras.layers.Layer] = []
        replaced = {id(head) for head in self._twin_of.values()}

        def walk(layer: keras.layers.Layer) -> None:
            if isinstance(layer, keras.Model):
                for inner in layer.layers:
                    walk(inner)
            elif layer.trainable_weights and id(layer) not in replaced and all(layer is not f for f in found):
                found.append(layer)

        for layer in self._model.layers:
            walk(layer)
        return found

    def layer_name(self, layer: keras.layers.Layer) -> str:
        """The model's name for one of ``weighted_layers`` (a twin is named as its head)."""
        return self._twin_of.get(id(layer), layer).name

    def __call__(self, images: Any, training: bool = False) -> dict[str, Any]:
        with capturing(self._inner_target, self._attention) as seen:
            outputs = dict(self._model(images, training=training))
        for path in self._inner_target:
            outputs["activations"] = seen.outputs[path]
        if self._attention:
            outputs["attention"] = [weights for _, weights in seen.attention]
        return outputs

    def logits(self, images: Any) -> Any:
        """Only the logits: no capture, for steps that need nothing else."""
        return self._model(images, training=False)["logits"]


def build_probe(model: keras.Model, info: ModelInfo, layer_path: str | None, attention: bool = False) -> Probe:
    """The probe for ``layer_path`` (a graph layer or one inside a subclassed layer, or None) and,
    when ``attention`` is set, the weights of ``info.attention_layers``."""
    plan = _Plan(record=lambda path: path == layer_path, logits_of=info.head_path)
    traced = _trace(model, info.input_size, info.channels, plan)
    outputs: dict[str, Any] = {"logits": traced.logits}
    inner = inner_layers(traced.layers)
    if layer_path is not None and layer_path in traced.records:
        outputs["activations"] = traced.records[layer_path]
    inner_target = {layer_path: inner[layer_path]} if layer_path in inner else {}
    every_layer = {**traced.layers, **inner}
    watched = {path: every_layer[path] for path in info.attention_layers} if attention else {}
    shape = next((l.output_shape for l in info.layers if l.path == layer_path), None)
    return Probe(keras.Model(traced.inputs, outputs), inner_target, watched, shape, traced.twin_of)


def class_scores(logits: tf.Tensor, info: ModelInfo, sign: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-class scores to explain and what the table reports, by the output's kind.

    Args:
        logits: (N, units) pre-activation outputs; a segmentation's (N, h, w, channels).
        sign: a regression's direction: 1 explains what increases the value, -1 what decreases it.

    Returns:
        (scores, reported), both (N, classes), a segmentation's (N, h, w, classes). A
        classifier: logits and softmax probabilities. Binary (one unit) becomes two classes:
        scores (-z, z), probabilities (1 - s, s). Multi-label: logits and each label's sigmoid.
        Regression: ``sign`` x the pre-activation value, and the values the model outputs (its
        own sigmoid applied, if it has one). A segmentation, per pixel, as a classifier (softmax
        or logits), a binary output (one sigmoid channel) or a multi-label one (several).
    """
    if info.kind == "binary" or (info.per_pixel_sigmoid and info.units == 1):
        scores = tf.concat([-logits, logits], axis=-1)
        return scores, tf.sigmoid(scores)
    if info.kind == "multilabel" or info.per_pixel_sigmoid:
        return logits, tf.sigmoid(logits)
    if info.kind == "regression":
        return sign * logits, tf.sigmoid(logits) if info.final_activation == "sigmoid" else logits
    return logits, tf.nn.softmax(logits, axis=-1)


def explained_measure(scores: tf.Tensor, reported: tf.Tensor, info: ModelInfo) -> tf.Tensor:
    """What Score-CAM weighs a mask by: the class's probability (a segmentation's, its mean over
    the region), or a regression's signed score."""
    return scores if info.kind == "regression" else reported


@dataclass(frozen=True)
class _Plan:
    record: Callable[[str], bool]  # which layer outputs to keep, by path
    logits_of: str | None = None  # path of the layer whose pre-activation output is wanted


@dataclass
class _Level:
    """What one model level's re-threading collected."""

    records: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, keras.layers.Layer] = field(default_factory=dict)
    producer: dict[int, str] = field(default_factory=dict)  # id(tensor) -> innermost layer path
    inputs_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # layer path -> its inputs' producers
    logits: Any = None
    twin_of: dict[int, keras.layers.Layer] = field(default_factory=dict)  # id(linear twin) -> the head it copies


@dataclass(frozen=True)
class _Traced:
    inputs: Any
    outputs: list[Any]
    heads: list[str]  # per output, the path of the innermost layer that produced it
    records: dict[str, Any]
    layers: dict[str, keras.layers.Layer]  # in execution order, inner layers before their model
    inputs_of: dict[str, tuple[str, ...]]  # the graph: each layer call's inputs by producer (or INPUT)
    logits: Any
    twin_of: dict[int, keras.layers.Layer]


INPUT = "<input>"  # the producer of the model's input in ``_Traced.inputs_of``


def _trace(model: keras.Model, size: tuple[int, int], channels: int, plan: _Plan) -> _Traced:
    inputs = keras.Input(batch_shape=(None, *size, channels), dtype="float32")
    level = _Level(producer={id(inputs): INPUT})
    outputs = _thread(model, inputs, "", plan, level)
    heads = [level.producer[id(o)] for o in outputs]
    return _Traced(inputs, outputs, heads, level.records, level.layers, level.inputs_of, level.logits, level.twin_of)


def _thread(model: keras.Model, x: Any, prefix: str, plan: _Plan, level: _Level) -> list[Any]:
    """Run ``model``'s layers on ``x``, recording into ``level``; returns the output tensors."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _call(layer, x, prefix=prefix, plan=plan, level=level)
        return [x]
    # A nested model's one input may be a one-element list (Keras 2 files) or dict (keras-hub's
    # {"images": ...}); the fresh input takes its place in the same structure, named by its key.
    if len(keras.tree.flatten(model.input)) != 1:
        raise ModelError(f"the nested model {model.name} takes {len(keras.tree.flatten(model.input))} inputs; "
                         "only single-image models are supported")
    key = next(iter(model.input)) if isinstance(model.input, dict) else None
    fresh = keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype, name=key)
    inner = _Level(producer={id(fresh): level.producer[id(x)]} if id(x) in level.producer else {})
    structured = keras.tree.map_structure(lambda _: fresh, model.input)
    clone = keras.models.clone_model(
        model, input_tensors=structured, clone_function=lambda layer: layer,
        call_function=partial(_call, prefix=prefix, plan=plan, level=inner),
    )
    taps = list(inner.records)
    exported = [*clone.outputs, *(inner.records[t] for t in taps)]
    if inner.logits is not None:
        exported.append(inner.logits)
    results = keras.Model(fresh, exported)(x)
    outputs, tapped = results[: len(clone.outputs)], results[len(clone.outputs):]
    level.records.update(zip(taps, tapped))
    if inner.logits is not None:
        level.logits = tapped[-1]
    level.twin_of.update(inner.twin_of)
    level.layers.update(inner.layers)
    level.inputs_of.update(inner.inputs_of)
    for inner_out, outer_out in zip(clone.outputs, outputs):
        level.producer[id(outer_out)] = inner.producer[id(inner_out)]
    return list(outputs)


def _call(layer: keras.layers.Layer, *args: Any, prefix: str, plan: _Plan, level: _Level, **kwargs: Any) -> Any:
    path = prefix + layer.name
    if isinstance(layer, (keras.Sequential, Functional)):
        outputs = _thread(layer, args[0], path + "/", plan, level)
        # Several outputs go back in the nested model's own structure: a dict of pyramid levels
        # (keras-hub's backbones) read by key must not be read by position.
        out = outputs[0] if len(outputs) == 1 else keras.tree.pack_sequence_as(layer.output, outputs)
    else:
        level.inputs_of[path] = _producers(args, kwargs, level)
        out = layer(*args, **kwargs)
        for tensor in keras.tree.flatten(out):
            level.producer[id(tensor)] = path
        if path == plan.logits_of:
            level.logits, twin = _pre_activation(layer, args, kwargs, out)
            if twin is not None:
                level.twin_of[id(twin)] = layer
    level.layers[path] = layer
    if plan.record(path):
        level.records[path] = out
    return out


def _producers(args: tuple, kwargs: dict, level: _Level) -> tuple[str, ...]:
    """The layers (or INPUT) whose outputs a call takes, each once, in argument order."""
    found = (level.producer.get(id(value)) for value in keras.tree.flatten((args, kwargs)))
    return tuple(dict.fromkeys(path for path in found if path is not None))


def _pre_activation(layer: keras.layers.Layer, args: tuple, kwargs: dict, out: Any) -> tuple[Any, Any]:
    """The head's pre-activation output, and the linear twin made to compute it (or None)."""
    if hasattr(layer, "logits_from"):  # a SavedModel's serving function (load._ServedModel)
        return layer.logits_from(out), None
    if final_activation(layer) == "linear":
        return out, None
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return args[0], None
    return _linear_twin(layer, args, kwargs)


def _linear_twin(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> tuple[Any, keras.layers.Layer]:
    """The same layer without its activation, sharing nothing but copied weights; and the twin."""
    config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}_logits"}
    twin = type(layer).from_config(config)
    out = twin(*args, **kwargs)
    twin.set_weights(layer.get_weights())
    return out, twin
