"""Which layer to explain: the candidates a user can choose from, and the one ``--layer auto`` picks."""

from __future__ import annotations

import re

from .._errors import LayerError, UsageError
from .._explain.registry import REGISTRY
from .files import SERVED_LAYER_TYPE
from .info import LayerInfo, ModelInfo


def candidate_layers(info: ModelInfo, name_regex: str) -> list[LayerInfo]:
    """Layers a CAM method can explain, in execution order: feature maps whose name matches
    ``name_regex`` (case-insensitive) or whose type is a convolution, in a transformer the
    patch-token layers after its first attention layer, and the end of the last conv block."""
    pattern = compile_layer_regex(name_regex)
    block_end = _end_of_last_conv_block(info)
    return [
        layer for layer in info.layers
        if (layer.is_feature_map and (layer.is_convolution or pattern.search(layer.name)))
        or is_token_layer(layer, info) or (block_end is not None and layer.path == block_end[0].path)
    ]


def auto_layer(info: ModelInfo, name_regex: str) -> tuple[LayerInfo, str]:
    """The layer ``--layer auto`` explains, and why.

    In a CNN, the end of the last convolutional block: the last layer, at or after the last
    convolution with a spatial map larger than 1x1, whose output has that convolution's spatial
    size and through which every path from the input to the explained output passes. So never
    one branch of a multi-branch module (Inception, NASNet) nor a residual branch (ResNet), and
    after the block's normalization and activation (MobileNetV2's ``out_relu``). In a
    transformer, the last patch-token layer. Otherwise the last candidate layer.
    """
    if not info.token_grid:
        block_end = _end_of_last_conv_block(info)
        if block_end is not None:
            return block_end
    candidates = candidate_layers(info, name_regex)
    if not candidates:
        raise LayerError(no_candidates(info, name_regex))
    if info.token_grid:
        return _last_block_input(info)
    return candidates[-1], f"the last layer that is a convolution or matches /{name_regex}/"


def _last_block_input(info: ModelInfo) -> tuple[LayerInfo, str]:
    """In a transformer, the last token layer before its last attention layer (the last block's
    normalized input). After that attention, a classifier that reads the class token gets
    nothing more from the patch tokens, so their gradient there is zero and a CAM map blank."""
    position = {layer.path: i for i, layer in enumerate(info.layers)}
    last_attention = position[info.attention_layers[-1]]
    tokens = [l for l in info.layers if is_token_layer(l, info)]
    before = [l for l in tokens if position[l.path] < last_attention]
    if before:
        return before[-1], (f"the input of the last attention layer ({info.attention_layers[-1]}): after it the "
                            "patch tokens no longer reach a class-token classifier")
    return tokens[-1], "the last patch-token layer of the transformer"


def _end_of_last_conv_block(info: ModelInfo) -> tuple[LayerInfo, str] | None:
    """The structural pick of ``auto_layer`` with its reason, or None (no convolution feeds the
    explained output, or no layer after it lies on every path to that output)."""
    convolutions = [l for l in info.layers if l.is_convolution and l.is_feature_map and l.path in info.feeds_output]
    stop, before = len(info.layers), ""
    classifier = _pixel_classifier(info, convolutions)
    if classifier is not None:  # explaining the class scores at the layer that computes them shows nothing new
        stop, before = info.layers.index(classifier), f", before the per-pixel classifier {classifier.path}"
        convolutions = convolutions[:-1]
    if not convolutions:
        return None
    last = convolutions[-1]
    start = info.layers.index(last)
    ends = [l for l in info.layers[start:stop]
            if l.path in info.on_every_path and l.is_feature_map and l.spatial_shape == last.spatial_shape]
    if not ends:
        return None
    if ends[-1] is last:
        return last, f"the last convolution{before}: every path to the output passes here"
    return ends[-1], f"end of the last conv block (after {last.path}{before}): every path to the output passes here"


def _pixel_classifier(info: ModelInfo, convolutions: list[LayerInfo]) -> LayerInfo | None:
    """A segmentation's last convolution when it gives the class channels (its 1x1 classifier)."""
    if info.kind != "segmentation" or not convolutions:
        return None
    last = convolutions[-1]
    return last if last.output_shape[-1] == info.units else None


def is_token_layer(layer: LayerInfo, info: ModelInfo) -> bool:
    """A (N, T, D) output of a transformer whose T tokens are the patch grid plus the extra
    tokens; CAM methods see it reshaped to the grid."""
    if not info.token_grid or layer.output_shape is None or len(layer.output_shape) != 3:
        return False
    rows, columns = info.token_grid
    return layer.output_shape[1] == rows * columns + info.extra_tokens


def compile_layer_regex(name_regex: str) -> re.Pattern[str]:
    try:
        return re.compile(name_regex, re.IGNORECASE)
    except re.error as exc:
        raise UsageError(f"--layer-regex {name_regex!r} is not a valid regular expression: {exc}")


def resolve_layer(info: ModelInfo, spec: str, name_regex: str) -> LayerInfo:
    """Pick the target layer: 'auto' (see ``auto_layer``), an index among candidates ('-1'),
    a path ('base/conv5'), or a unique layer name."""
    if spec == "auto":
        return auto_layer(info, name_regex)[0]
    candidates = candidate_layers(info, name_regex)
    if re.fullmatch(r"-?\d+", spec):
        if not candidates:
            raise LayerError(f"--layer {spec}: {no_candidates(info, name_regex)}")
        index = int(spec)
        if not -len(candidates) <= index < len(candidates):
            raise LayerError(
                f"--layer {spec}: there are {len(candidates)} candidate layers "
                f"({_list([l.path for l in candidates])}); use an index from "
                f"{-len(candidates)} to {len(candidates) - 1}"
            )
        return candidates[index]
    matches = [l for l in info.layers if l.path == spec] or [l for l in info.layers if l.name == spec]
    if not matches:
        raise LayerError(
            f"layer {spec!r} not found; candidates: {_list([l.path for l in candidates])} "
            "(see `xai layers MODEL`)"
        )
    if len(matches) > 1:
        raise LayerError(f"layer name {spec!r} is ambiguous: {_list([l.path for l in matches])}; give the path")
    layer = matches[0]
    if not (layer.is_feature_map or is_token_layer(layer, info)):
        raise LayerError(
            f"layer {layer.path!r} outputs {layer.output_shape}, not a feature map "
            f"(N, H, W, C) or (N, D, H, W, C) of more than one position; candidates: {_list([l.path for l in candidates])}"
        )
    return layer


def no_candidates(info: ModelInfo, name_regex: str) -> str:
    """Why ``info``'s model has no candidate layer, and what works instead, in one line fit for
    its kind: a SavedModel served as one function, feature maps that are not candidates, or no
    feature map at all."""
    instead = f"use a method that needs no layer: {', '.join(_layerless_methods())}"
    if any(layer.type_name == SERVED_LAYER_TYPE for layer in info.layers):
        return f"this SavedModel keeps only its serving function, so no layer inside it can be reached; {instead}"
    feature_maps = [layer.path for layer in info.layers if layer.is_feature_map]
    if not feature_maps:
        return f"no layer of this model outputs a feature map (N, H, W, C); {instead}"
    return (f"no convolutional layer found (a feature map, (N, H, W, C) or a 3-D model's (N, D, H, W, C), whose name matches /{name_regex}/ or whose type "
            f"is a convolution); feature-map layers: {_list(feature_maps)}; choose one with --layer, or {instead}")


def _layerless_methods() -> list[str]:
    """Methods that work on the input, not a layer, from the one registry."""
    return [name for name, spec in REGISTRY.items() if spec.family == "gradient"]


def _list(items: list[str], most: int = 8) -> str:
    if not items:
        return "(none)"
    shown = ", ".join(items[-most:])
    return shown if len(items) <= most else f"... {shown} ({len(items)} in all)"
