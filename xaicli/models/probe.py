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

if TYPE_CHECKING:
    from .info import ModelInfo


SQUASHING = ("softmax", "sigmoid")


def final_activation(layer: keras.layers.Layer) -> str:
    """'softmax' or 'sigmoid' when ``layer`` squashes its output that way, else 'linear'."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return name if name in SQUASHING else "linear"


def build_probe(model: keras.Model, info: ModelInfo, layer_path: str | None,
                attention: bool = False) -> keras.Model:
    """A model mapping a (N, H, W, C) float32 batch to ``{"logits": (N, units)}``, plus
    ``"activations"`` of ``layer_path`` when given ((N, h, w, k), or (N, T, D) for a token
    layer), plus ``"attention"``: one (N, heads, T, T) score tensor per attention layer when
    ``attention`` is set."""
    plan = _Plan(record=lambda path: path == layer_path, logits_of=info.head_path, attention=attention)
    traced = _trace(model, info.input_size, info.channels, plan)
    outputs: dict[str, Any] = {"logits": traced.logits}
    if layer_path is not None:
        outputs["activations"] = traced.records[layer_path]
    if attention:
        outputs["attention"] = [traced.records[p + ATTENTION_SCORES] for p in info.attention_layers]
    return keras.Model(traced.inputs, outputs)


def class_scores(logits: tf.Tensor, info: ModelInfo) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-class scores to explain and probabilities to report.

    Args:
        logits: (N, units) pre-activation outputs.

    Returns:
        (scores, probabilities), both (N, num_classes). A one-unit sigmoid becomes two
        classes: score (-z, z), probability (1 - s, s). Softmax and linear heads report
        softmax probabilities; multi-label sigmoid heads report per-label sigmoids.
    """
    if info.is_binary_sigmoid:
        scores = tf.concat([-logits, logits], axis=-1)
        return scores, tf.sigmoid(scores)
    if info.final_activation == "sigmoid":
        return logits, tf.sigmoid(logits)
    return logits, tf.nn.softmax(logits, axis=-1)


@dataclass(frozen=True)
class _Plan:
    record: Callable[[str], bool]  # which layer outputs to keep, by path
    logits_of: str | None = None  # path of the layer whose pre-activation output is wanted
    attention: bool = False  # also keep every MultiHeadAttention layer's scores


@dataclass
class _Level:
    """What one model level's re-threading collected."""

    records: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, keras.layers.Layer] = field(default_factory=dict)
    producer: dict[int, str] = field(default_factory=dict)  # id(tensor) -> innermost layer path
    inputs_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # layer path -> its inputs' producers
    logits: Any = None


@dataclass(frozen=True)
class _Traced:
    inputs: Any
    outputs: list[Any]
    heads: list[str]  # per output, the path of the innermost layer that produced it
    records: dict[str, Any]
    layers: dict[str, keras.layers.Layer]  # in execution order, inner layers before their model
    inputs_of: dict[str, tuple[str, ...]]  # the graph: each layer call's inputs by producer (or INPUT)
    logits: Any


INPUT = "<input>"  # the producer of the model's input in ``_Traced.inputs_of``


def _trace(model: keras.Model, size: tuple[int, int], channels: int, plan: _Plan) -> _Traced:
    inputs = keras.Input(batch_shape=(None, *size, channels), dtype="float32")
    level = _Level(producer={id(inputs): INPUT})
    outputs = _thread(model, inputs, "", plan, level)
    heads = [level.producer[id(o)] for o in outputs]
    return _Traced(inputs, outputs, heads, level.records, level.layers, level.inputs_of, level.logits)


def _thread(model: keras.Model, x: Any, prefix: str, plan: _Plan, level: _Level) -> list[Any]:
    """Run ``model``'s layers on ``x``, recording into ``level``; returns the output tensors."""
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _call(layer, x, prefix=prefix, plan=plan, level=level)
        return [x]
    fresh = keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype)
    inner = _Level(producer={id(fresh): level.producer[id(x)]} if id(x) in level.producer else {})
    # Models saved by Keras 2 reload with their input as a one-element list; match its structure.
    structured = [fresh] if isinstance(model.input, (list, tuple)) else fresh
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
    level.layers.update(inner.layers)
    level.inputs_of.update(inner.inputs_of)
    for inner_out, outer_out in zip(clone.outputs, outputs):
        level.producer[id(outer_out)] = inner.producer[id(inner_out)]
    return list(outputs)


def _call(layer: keras.layers.Layer, *args: Any, prefix: str, plan: _Plan, level: _Level, **kwargs: Any) -> Any:
    path = prefix + layer.name
    if isinstance(layer, (keras.Sequential, Functional)):
        outputs = _thread(layer, args[0], path + "/", plan, level)
        out = outputs[0] if len(outputs) == 1 else outputs
    elif plan.attention and isinstance(layer, keras.layers.MultiHeadAttention):
        level.inputs_of[path] = _producers(args, kwargs, level)
        out = _attend(layer, args, kwargs, path, level)
    else:
        level.inputs_of[path] = _producers(args, kwargs, level)
        out = layer(*args, **kwargs)
        for tensor in keras.tree.flatten(out):
            level.producer[id(tensor)] = path
        if path == plan.logits_of:
            level.logits = _pre_activation(layer, args, kwargs, out)
    level.layers[path] = layer
    if plan.record(path):
        level.records[path] = out
    return out


def _producers(args: tuple, kwargs: dict, level: _Level) -> tuple[str, ...]:
    """The layers (or INPUT) whose outputs a call takes, each once, in argument order."""
    found = (level.producer.get(id(value)) for value in keras.tree.flatten((args, kwargs)))
    return tuple(dict.fromkeys(path for path in found if path is not None))


ATTENTION_SCORES = ":attention"  # suffix of the record holding a layer's attention scores


class _WithScores(keras.layers.Layer):
    """Calls a MultiHeadAttention layer (same weights) asking for its scores too. Asking the
    layer itself symbolically gives a scores tensor that a Functional model reports as "not
    connected to inputs" (Keras 3.15); as the outputs of this layer's own node, both connect."""

    def __init__(self, attention: keras.layers.MultiHeadAttention, **kwargs: Any):
        super().__init__(name=f"{attention.name}_with_scores", **kwargs)
        self.attention = attention

    def call(self, *args: Any, **kwargs: Any) -> Any:
        return self.attention(*args, **kwargs, return_attention_scores=True)

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        return self.attention.compute_output_spec(*args, **kwargs, return_attention_scores=True)


def _attend(layer: keras.layers.MultiHeadAttention, args: tuple, kwargs: dict, path: str, level: _Level) -> Any:
    """Call the layer asking for its scores too; record them, pass on only what the model used."""
    wanted_scores = kwargs.pop("return_attention_scores", False)
    output, scores = _WithScores(layer)(*args, **kwargs)
    level.records[path + ATTENTION_SCORES] = scores
    out = (output, scores) if wanted_scores else output
    for tensor in keras.tree.flatten(out):
        level.producer[id(tensor)] = path
    return out


def _pre_activation(layer: keras.layers.Layer, args: tuple, kwargs: dict, out: Any) -> Any:
    if hasattr(layer, "logits_from"):  # a SavedModel's serving function (load._ServedModel)
        return layer.logits_from(out)
    if final_activation(layer) == "linear":
        return out
    if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
        return args[0]
    return _linear_twin(layer, args, kwargs)


def _linear_twin(layer: keras.layers.Layer, args: tuple, kwargs: dict) -> Any:
    """The same layer without its activation, sharing nothing but copied weights."""
    config = {**layer.get_config(), "activation": "linear", "name": f"{layer.name}_logits"}
    twin = type(layer).from_config(config)
    out = twin(*args, **kwargs)
    twin.set_weights(layer.get_weights())
    return out
