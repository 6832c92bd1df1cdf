"""What a loaded model is: its input, layers (nested ones by path), outputs and which one is
explained, preprocessing layers, attention layers and token grid, as plain data (``ModelInfo``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .._errors import ModelError, UsageError, first_line
from .capture import Captured, capturing, inner_layers, is_attention
from .graph import ancestors, on_every_path
from .info import LayerInfo, ModelInfo, OutputInfo
from .kinds import AUTO_KIND, resolved_kind
from .load import load_custom_objects, load_model
from .probe import INPUT, _Plan, _trace, final_activation

CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv3D,
    keras.layers.Conv3DTranspose,
)
PREPROCESSING_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization)
AUTO_OUTPUT = "auto"  # --output auto: the only, or first, classifier output


def open_model(path: Path, *, input_size: tuple[int, ...] | None = None, output: str = AUTO_OUTPUT,
               kind: str = AUTO_KIND, unsafe: bool = False,
               custom_objects: str | None = None) -> tuple[keras.Model, ModelInfo]:
    """Load and inspect in one step, as every command does."""
    objects = load_custom_objects(custom_objects) if custom_objects else None
    model = load_model(path, unsafe=unsafe, custom_objects=objects)
    return model, inspect_model(model, input_size, output, kind)


def inspect_model(model: keras.Model, input_size: tuple[int, ...] | None = None,
                  output: str = AUTO_OUTPUT, kind: str = AUTO_KIND) -> ModelInfo:
    """Trace the model once, symbolically, and describe its input, layers and outputs.

    Args:
        input_size: (height, width), or a volume model's (depth, height, width), for models whose
            input size is not fixed.
        output: which output to explain: 'auto' (the only, or first, (N, units) output), an
            index, or the name or path of the layer that produces it (``xai info`` lists them).
        kind: what that output is (``kinds.KINDS``); 'auto' tells it from its shape and activation.
    """
    size, channels = _input_geometry(model, input_size)
    traced = _trace(model, size, channels, _Plan(record=lambda _path: True))
    graph_layers = tuple(
        LayerInfo(path, type(layer).__name__, _shape(traced.records.get(path)),
                  isinstance(layer, CONVOLUTIONS))
        for path, layer in traced.layers.items()
    )
    inner = inner_layers(traced.layers)
    watched = {path: layer for path, layer in {**traced.layers, **inner}.items() if is_attention(layer)}
    seen = _run_once(model, size, channels, inner, watched) if inner or watched else Captured()
    layers = _with_inner_layers(graph_layers, inner, seen)
    outputs = tuple(
        OutputInfo(i, head, tuple(tensor.shape), final_activation(traced.layers[head]))
        for i, (head, tensor) in enumerate(zip(traced.heads, traced.outputs))
    )
    chosen, output_reason = choose_output(outputs, output)
    kind, kind_reason = resolved_kind(kind, chosen.shape, chosen.final_activation)
    attention = tuple(dict.fromkeys(path for path, _ in seen.attention))
    grid, extra, attention_note = _token_layout(layers, attention, [tuple(w.shape) for _, w in seen.attention], size)
    return ModelInfo(
        input_size=size,
        model_name=model.name,
        channels=channels,
        layers=layers,
        head_path=chosen.head_path,
        final_activation=chosen.final_activation,
        units=chosen.units,
        kind=kind,
        kind_reason=kind_reason,
        preprocessing=tuple(p for p, l in traced.layers.items() if isinstance(l, PREPROCESSING_LAYERS)),
        outputs=outputs,
        output_reason=output_reason,
        attention_layers=attention,
        token_grid=grid,
        extra_tokens=extra,
        attention_note=attention_note,
        image_converter=_image_converter(model, channels),
        feeds_output=frozenset(ancestors(traced.inputs_of, chosen.head_path)),
        on_every_path=frozenset(on_every_path(traced.layers, traced.inputs_of, INPUT, chosen.head_path)),
    )


def _image_converter(model: keras.Model, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(scale, offset) per channel of a keras-hub classifier's own image converter, saved with it
    as its preprocessor; None for other models. The converter maps 0..255 pixels to
    ``pixels * scale + offset``; None in either means 1 or 0."""
    converter = getattr(getattr(model, "preprocessor", None), "image_converter", None)
    if converter is None or not hasattr(converter, "scale"):
        return None

    def per_channel(value: Any, default: float) -> tuple[float, ...]:
        values = [default] if value is None else list(np.ravel(np.asarray(value, dtype=np.float64)))
        return tuple(float(v) for v in (values * channels if len(values) == 1 else values))

    scale, offset = per_channel(converter.scale, 1.0), per_channel(getattr(converter, "offset", None), 0.0)
    if len(scale) != channels or len(offset) != channels or min(scale) <= 0:
        return None
    return scale, offset


def _run_once(model: keras.Model, size: tuple[int, int], channels: int, inner: dict[str, keras.layers.Layer],
              attention: dict[str, keras.layers.Layer]) -> Captured:
    """Call the model once on a blank image, recording what the inner layers return and the
    attention weights, in call order: their shapes, and the order in which blocks run."""
    try:
        with capturing(inner, attention) as seen:
            model(np.zeros((1, *size, channels), np.float32), training=False)
    except Exception as exc:  # the user's layers: any error they raise is theirs to see
        raise ModelError(f"the model fails on a blank {size[0]}x{size[1]} image: {first_line(exc)}") from exc
    return seen


def _with_inner_layers(graph_layers: tuple[LayerInfo, ...], inner: dict[str, keras.layers.Layer],
                       seen: Captured) -> tuple[LayerInfo, ...]:
    """The graph's layers with the inner layers that ran placed before the layer holding them,
    in the order they ran (as nested models' layers come before the model)."""
    called = [path for path in dict.fromkeys(seen.order) if path in inner]
    placed: set[str] = set()
    layers: list[LayerInfo] = []
    for layer in graph_layers:
        for path in called:
            if path.startswith(layer.path + "/") and path not in placed:
                placed.add(path)
                layers.append(LayerInfo(path, type(inner[path]).__name__, _batchless(seen.outputs[path]),
                                        isinstance(inner[path], CONVOLUTIONS)))
        layers.append(layer)
    return tuple(layers)


def _batchless(tensor: Any) -> tuple[int | None, ...] | None:
    """The shape of an eagerly computed output, with the batch dimension as Keras reports it."""
    shape = _shape(tensor)
    return None if shape is None else (None, *(int(d) for d in shape[1:]))


def _token_layout(layers: tuple[LayerInfo, ...], attention: tuple[str, ...],
                  weight_shapes: list[tuple[int, ...]], size: tuple[int, int]) -> tuple[tuple[int, int] | None, int, str]:
    """The patch grid, the number of leading extra tokens (class, distillation, register) and,
    when the attention cannot be placed on the image, why.

    Every attention layer must weigh the same T tokens against each other ((N, heads, T, T)):
    windowed or hierarchical attention (Swin) does not. The grid is the last 4-D feature map
    before the first attention layer (the patch embedding) when the tokens fit it, else the
    square-patch grid of the input that leaves the fewest extra tokens."""
    if not attention:
        return None, 0, ""
    tokens = weight_shapes[0][-1]
    if any(len(shape) != 4 or shape[-2:] != (tokens, tokens) for shape in weight_shapes):
        return None, 0, ("its attention layers do not all weigh the same tokens against each other "
                         f"(weights shaped {', '.join(str(s[1:]) for s in dict.fromkeys(weight_shapes))}), as in "
                         "windowed or hierarchical attention (Swin); rollout needs a plain Vision Transformer")
    first = next(i for i, l in enumerate(layers) if l.path == attention[0])
    maps = [l for l in layers[:first] if l.is_feature_map]
    embedded = (int(maps[-1].output_shape[1]), int(maps[-1].output_shape[2])) if maps else None
    for grid in (embedded, _patch_grid(tokens, size)):
        if grid and 0 <= tokens - grid[0] * grid[1] <= MAX_EXTRA_TOKENS:
            return grid, tokens - grid[0] * grid[1], ""
    return None, 0, f"its {tokens} tokens do not map onto a patch grid of the {size[0]}x{size[1]} input"


MAX_EXTRA_TOKENS = 16  # class, distillation and register tokens (DINOv2 with registers has 5)


def _patch_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """(rows, columns) of square patches that tile the input with the fewest tokens left over."""
    height, width = size
    for extra in range(MAX_EXTRA_TOKENS + 1):
        for patch in range(1, min(height, width) + 1):
            if height % patch == 0 and width % patch == 0 and (height // patch) * (width // patch) == tokens - extra:
                return height // patch, width // patch
    return None


def choose_output(outputs: tuple[OutputInfo, ...], spec: str) -> tuple[OutputInfo, str]:
    """The output to explain and why: 'auto' takes the only (N, units) output, or the first of
    several, or, without one, the first per-pixel (N, h, w, C) output; an index or a head
    layer's name or path takes that output, which must be one of them."""
    explainable = [o for o in outputs if o.explainable]
    listing = "; ".join(o.describe() for o in outputs)
    if spec == AUTO_OUTPUT:
        if not explainable:
            raise ModelError(f"the model has no output shaped (N, units) or (N, H, W, C) to explain; its outputs: "
                             f"{listing}. Save the model with its head")
        image_level = [o for o in explainable if len(o.shape) == 2]
        candidates, shape = (image_level, "(N, units)") if image_level else (explainable, "(N, h, w, C)")
        chosen = candidates[0]
        if len(outputs) == 1:
            return chosen, "the model's only output"
        if len(candidates) == 1:
            return chosen, f"the only {shape} output of {len(outputs)}"
        return chosen, f"the first of {len(candidates)} {shape} outputs; choose another with --output"
    chosen = _named_output(outputs, spec)
    if chosen is None:
        raise UsageError(f"--output {spec!r} does not name an output; the model has {listing}")
    if not chosen.explainable:
        choices = ", ".join(o.describe() for o in explainable) or "(none)"
        raise UsageError(f"--output {spec!r} is {chosen.describe()}, not an output shaped (N, units) or (N, h, w, C); "
                         f"outputs that can be explained: {choices}")
    return chosen, "as requested"


def _named_output(outputs: tuple[OutputInfo, ...], spec: str) -> OutputInfo | None:
    """The output an index ('1', '-1') or a head layer's path or name refers to, if any."""
    if re.fullmatch(r"-?\d+", spec.strip()) and -len(outputs) <= int(spec) < len(outputs):
        return outputs[int(spec)]
    return next((o for o in outputs if spec in (o.head_path, o.head_path.rsplit("/", 1)[-1])), None)


def _input_geometry(model: keras.Model, input_size: tuple[int, ...] | None) -> tuple[tuple[int, ...], int]:
    """The model input's spatial size, (H, W) or a volume model's (D, H, W), and its channels."""
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs; only single-image models are supported")
    shape = tuple(inputs[0].shape)
    if len(shape) not in (4, 5):
        raise ModelError(f"the model input has shape {shape}; expected an image batch (N, H, W, C) or a volume "
                         "batch (N, D, H, W, C)")
    channels = shape[-1]
    if len(shape) == 5 and channels != 1:
        raise ModelError(f"the model expects volumes of {channels} channels; xai feeds one-channel volumes "
                         "(a scan), so a model of several modalities at once is not supported")
    if channels not in (1, 3):
        raise ModelError(f"the model expects {channels} channels; only 1 (grayscale) or 3 (RGB) are supported")
    spatial = shape[1:-1]
    if input_size is not None:
        if len(input_size) != len(spatial):
            raise UsageError(f"--input-size {'x'.join(map(str, input_size))} has {len(input_size)} sizes; this model "
                             f"takes {'volumes: give DxHxW' if len(spatial) == 3 else 'images: give HxW'}")
        return tuple(input_size), channels
    if any(d is None for d in spatial):
        wanted = "DxHxW" if len(spatial) == 3 else "HxW"
        raise UsageError(
            f"the model accepts any {'volume' if len(spatial) == 3 else 'image'} size (input shape {shape}); "
            f"give the size it was trained on with --input-size {wanted}"
        )
    return tuple(int(d) for d in spatial), int(channels)


def _shape(tensor: Any) -> tuple[int | None, ...] | None:
    if tensor is None or isinstance(tensor, (list, tuple, dict)):
        return None
    return tuple(tensor.shape)
