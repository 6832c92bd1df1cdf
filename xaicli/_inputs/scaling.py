"""Pixel scalings that turn 0..255 pictures into model inputs: the presets and custom mean/std."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _scale(offset: Sequence[float], divisor: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    off = np.asarray(offset, dtype=np.float32)
    div = np.asarray(divisor, dtype=np.float32)
    return lambda pixels: (pixels - off) / div


_IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PRESETS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": _scale([0.0], [1.0]),
    "unit": _scale([0.0], [255.0]),
    "symmetric": _scale([127.5], [127.5]),
    "torch": _scale(_IMAGENET_MEAN_RGB, _IMAGENET_STD_RGB),
    "caffe": lambda pixels: pixels[..., ::-1] - np.asarray(_CAFFE_MEAN_BGR, dtype=np.float32),
}
PRESET_HELP = {
    "none": "pixels 0..255 as they are (the model rescales inside)",
    "unit": "pixels / 255, range 0..1",
    "symmetric": "pixels / 127.5 - 1, range -1..1 (MobileNet, Inception, Xception, ResNetV2 style)",
    "torch": "0..1 then ImageNet mean/std per RGB channel",
    "caffe": "RGB to BGR, then ImageNet mean subtracted (ResNet, VGG style)",
}
PRESET_HELP["custom"] = "(pixels / 255 - --mean) / --std per channel, torchvision style"
COLOUR_ONLY_PRESETS = frozenset({"torch", "caffe"})
Scaling = Callable[[np.ndarray], np.ndarray]


def custom_scaling(mean: Sequence[float], std: Sequence[float]) -> Scaling:
    """``(pixels / 255 - mean) / std``: mean and std on the 0..1 scale, one value or one per channel."""
    return _scale([m * 255.0 for m in mean], [s * 255.0 for s in std])
