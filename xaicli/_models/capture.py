"""Tensors from inside layers that are not nodes of the model graph: the blocks of a subclassed
encoder (keras-hub ViT, DeiT, DINOv2; vit_keras), their attention weights, and attention layers
anywhere.

A re-threaded Functional model can only return tensors of its own graph, and a layer hidden in
a subclassed layer has none there. So the tensors are taken while the model runs: for the
duration of one call, the chosen layer instances get a ``call`` of their own (an instance
attribute over the class's method) that passes everything through and records what the layer
returned. Inside a compiled step the recorded tensors belong to the same graph as the logits,
so gradients reach them. The instance attributes are removed when the call returns; the model,
its classes and its file are never changed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import keras
from keras.src.models.functional import Functional


def is_attention(layer: keras.layers.Layer) -> bool:
    """Keras's MultiHeadAttention (and subclasses), or vit_keras's own self-attention, which
    returns its weights beside its output."""
    return isinstance(layer, keras.layers.MultiHeadAttention) or (
        type(layer).__name__ == "MultiHeadSelfAttention" and type(layer).__module__.startswith("vit_keras"))


def inner_layers(graph_layers: dict[str, keras.layers.Layer]) -> dict[str, keras.layers.Layer]:
    """The sublayers of the graph's layers that are not graph nodes themselves, at any depth,
    by path (``backbone/vit_encoder/transformer_block_1/mha``). Nested Functional and
    Sequential models are graph nodes already (their layers are re-threaded), and neither
    Keras's own layers nor attention layers are opened: their sublayers (the query, key and
    value projections) are how they compute, not blocks of the network."""
    found: dict[str, keras.layers.Layer] = {}

    def walk(layer: keras.layers.Layer, prefix: str) -> None:
        if type(layer).__module__.startswith("keras.") or is_attention(layer):
            return
        for sub in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}/{sub.name}"
            if path not in found and path not in graph_layers:
                found[path] = sub
                walk(sub, path)

    for path, layer in graph_layers.items():
        if not isinstance(layer, (keras.Sequential, Functional)):
            walk(layer, path)
    return found


@dataclass
class Captured:
    """What one call recorded: outputs by path, and attention weights in call order."""

    outputs: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # paths of recorded outputs, in call order
    attention: list[tuple[str, Any]] = field(default_factory=list)  # (path, (N, heads, T, T) weights)


@contextlib.contextmanager
def capturing(outputs: dict[str, keras.layers.Layer],
              attention: dict[str, keras.layers.Layer]) -> Iterator[Captured]:
    """While active, record what each layer of ``outputs`` returns (its first output when it
    returns several) and the attention weights of each layer of ``attention``."""
    captured = Captured()
    hooked: list[keras.layers.Layer] = []
    try:
        for path, layer in {**outputs, **attention}.items():
            original = layer.call
            object.__setattr__(layer, "call", _recorder(original, path, captured, path in outputs, path in attention,
                                                        isinstance(layer, keras.layers.MultiHeadAttention)))
            hooked.append(layer)
        yield captured
    finally:
        for layer in hooked:
            if "call" in vars(layer):
                object.__delattr__(layer, "call")


def _recorder(original: Any, path: str, captured: Captured, keep_output: bool, keep_attention: bool,
              asks_for_scores: bool) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        wanted_scores = kwargs.get("return_attention_scores", False)
        if keep_attention and asks_for_scores:
            kwargs["return_attention_scores"] = True  # same computation, the weights returned too
        result = original(*args, **kwargs)
        if keep_attention:
            output, weights = result  # Keras MHA with scores asked for; vit_keras always
            captured.attention.append((path, weights))
            result = result if wanted_scores or not asks_for_scores else output
        if keep_output:
            captured.outputs[path] = result[0] if isinstance(result, (tuple, list)) else result
            captured.order.append(path)
        return result

    return call
