"""Which pixel scaling a model expects (``--preprocess auto``), and why.

A model that rescales inside (``Rescaling``/``Normalization`` layers, as EfficientNet, ConvNeXt
and MobileNetV3 do) is fed raw 0..255 pixels. Otherwise a keras.applications backbone, flat or
nested under any outer model, is recognized by its model name or, when renamed, by layer names
only that family has, and gets the scaling of its ``preprocess_input``. Pure Python on
``ModelInfo``, so it is tested without TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from .info import ModelInfo

EXPECTS = {
    "caffe": "BGR pixels with the ImageNet mean subtracted (caffe)",
    "symmetric": "pixels scaled to -1..1",
    "torch": "pixels scaled to 0..1 and normalized by the ImageNet mean and std (torch)",
}


@dataclass(frozen=True)
class Family:
    """A keras.applications family: how to recognize it and the preset of its preprocess_input."""

    display: str  # 'MobileNetV2', as Keras names the application
    preset: str  # the preset of its preprocess_input, when the model does not rescale inside
    name: str  # full-match regex for the model names Keras gives it
    signature: tuple[str, ...]  # regexes that each match a layer name of the family (all must); () = by name only


# From each module's preprocess_input in keras.applications (mode caffe / tf / torch). The
# families that rescale inside are here to be named; their preset applies only to models built
# with include_preprocessing=False.
FAMILIES = (
    Family("VGG", "caffe", r"vgg1[69]", (r"block1_conv1", r"block5_conv3", r"block5_pool")),
    Family("ResNet", "caffe", r"resnet(50|101|152)", (r"conv1_bn", r"conv5_block3_out")),
    Family("ResNetV2", "symmetric", r"resnet(50|101|152)v2", (r"post_relu", r"conv5_block\d+_preact_bn")),
    Family("InceptionV3", "symmetric", r"inception_v3", (r"mixed0", r"mixed10")),
    Family("InceptionResNetV2", "symmetric", r"inception_resnet_v2", (r"mixed_5b", r"conv_7b_ac")),
    Family("Xception", "symmetric", r"xception", (r"block1_conv1_act", r"block14_sepconv2_act")),
    Family("MobileNet", "symmetric", r"mobilenet_[\d.]+_\d+", (r"conv_dw_1", r"conv_pw_13_relu")),
    Family("MobileNetV2", "symmetric", r"mobilenetv2_[\d.]+_\d+", (r"block_16_project", r"out_relu")),
    Family("MobileNetV3", "symmetric", r"mobilenetv3(small|large)", (r"expanded_conv_\d+_squeeze_excite_conv",)),
    Family("NASNet", "symmetric", r"nasnet(_mobile|_large)?", (r"normal_concat_\d+", r"reduction_concat_\w+")),
    Family("DenseNet", "torch", r"densenet\d+", (r"conv2_block1_concat", r"pool2_conv")),
    Family("EfficientNet", "torch", r"efficientnetb\d", (r"stem_conv", r"block1a_dwconv", r"top_activation")),
    Family("EfficientNetV2", "torch", r"efficientnetv2-b\d", (r"stem_conv", r"block1a_project_conv", r"top_activation")),
    # S/M/L rescale by 1/128 - 1 where B0-B3 normalize; no layer name tells them apart, so only the
    # model name does (a renamed S/M/L built without its preprocessing is taken for B0-B3).
    Family("EfficientNetV2-S/M/L", "symmetric", r"efficientnetv2-[sml]", ()),
    Family("ConvNeXt", "torch", r"convnext_\w+", (r"\w*_stage_\d+_block_\d+_depthwise_conv",)),
)


@dataclass(frozen=True)
class Recognized:
    family: Family
    where: str  # 'the model resnet50', 'the backbone base/mobilenetv2_1.00_160'
    by_name: bool  # recognized by its name, not by its layer names

    def __str__(self) -> str:
        how = "is" if self.by_name else "has the layers of"
        return f"{self.where} {how} Keras's {self.family.display}"


@dataclass(frozen=True)
class Preprocessing:
    """The decision: a preset of ``images.PRESETS`` or 'custom' with its mean and std (0..1 scale)."""

    preset: str
    reason: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def choose_preprocessing(requested: str, info: ModelInfo, mean: tuple[float, ...] | None = None,
                         std: tuple[float, ...] | None = None) -> Preprocessing:
    """The scaling to use and why: ``requested`` (with ``mean``/``std`` for 'custom') unless it
    is 'auto'; then the model's own keras-hub image converter, a model that rescales inside, a
    recognized keras.applications family, or pixels/255, in that order."""
    if requested != "auto":
        return Preprocessing(requested, "as requested", mean, std)
    if info.image_converter is not None:
        return _from_image_converter(*info.image_converter)
    return Preprocessing(*_by_layers(info))


def _from_image_converter(scale: tuple[float, ...], offset: tuple[float, ...]) -> Preprocessing:
    """A keras-hub image converter computes ``pixels * scale + offset`` from 0..255 pixels; as
    ``(pixels / 255 - mean) / std`` that is ``std = 1 / (255 scale)`` and ``mean = -offset std``."""
    std = tuple(1.0 / (255.0 * s) for s in scale)
    mean = tuple(-o * d for o, d in zip(offset, std)) if len(offset) == len(std) else tuple(-o * std[0] for o in offset)
    shown = lambda values: ",".join(f"{v:.6g}" for v in values)  # noqa: E731
    return Preprocessing("custom", f"the model's own keras-hub image converter: pixels * {shown(scale)} + "
                                   f"{shown(offset)}, i.e. mean {shown(mean)} and std {shown(std)} on the 0..1 scale",
                         mean, std)


def _by_layers(info: ModelInfo) -> tuple[str, str]:
    found = recognize(info)
    if info.preprocessing:
        named = f" ({found})" if found else ""
        return "none", f"the model rescales inside: {info.preprocessing[0]}{named}"
    if found:
        preset = found.family.preset
        return preset, f"{found}, which expects {EXPECTS[preset]}"
    return "unit", "no Rescaling/Normalization layer in the model, assuming pixels/255"


def recognize(info: ModelInfo) -> Recognized | None:
    """The first keras.applications family found in the model tree, outermost level first."""
    for path, name, layer_names in _levels(info):
        where = f"the backbone {path}" if path else f"the model {name}"
        for family in FAMILIES:
            if re.fullmatch(family.name, name, re.IGNORECASE):
                return Recognized(family, where, by_name=True)
        for family in FAMILIES:
            if family.signature and all(any(re.fullmatch(pattern, layer) for layer in layer_names)
                                        for pattern in family.signature):
                return Recognized(family, where, by_name=False)
    return None


def _levels(info: ModelInfo) -> Iterator[tuple[str, str, list[str]]]:
    """(path, model name, names of the layers directly in it) for the model and each nested one."""
    paths = [layer.path for layer in info.layers]
    nested = sorted((p for p in paths if any(q.startswith(p + "/") for q in paths)), key=lambda p: p.count("/"))
    for prefix, name in [("", info.model_name), *((p, p.rsplit("/", 1)[-1]) for p in nested)]:
        start = prefix + "/" if prefix else ""
        direct = [p[len(start):] for p in paths if p.startswith(start) and "/" not in p[len(start):]]
        yield prefix, name, direct
