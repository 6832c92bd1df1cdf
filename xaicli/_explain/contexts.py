"""What each family of methods is given to compute its maps (numpy only): the batch, the classes,
the layer's activations or the attention weights, a way to ask the model for more, and the
methods' options."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class MethodOptions:
    """The methods' own options, read as attributes (``options.ig_steps``): every option the
    methods declare, by name, with the run's value. ``baseline`` is the integrated-gradients
    starting input, (H, W, C) float32 in model-input units (already preprocessed); ``seed``
    starts the random numbers a method draws (with the image's content, see ``image_seed``)."""

    values: dict[str, object] = field(default_factory=dict)
    baseline: np.ndarray | None = None
    seed: int = 0

    def __getattr__(self, name: str) -> object:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"no method option {name!r}; declared: {', '.join(values) or 'none'}")


@dataclass(frozen=True)
class GradientContext:
    """What a gradient-family method gets: the padded batch, its classes, and a way to ask for
    d score / d input at any other inputs (same classes)."""

    images: np.ndarray  # (B, H, W, C) float32
    classes: np.ndarray  # (B,) int32
    options: MethodOptions
    gradient: Callable[[np.ndarray], np.ndarray]  # (B, H, W, C) -> (B, H, W, C)
    at_images: np.ndarray  # gradient(images), (B, H, W, C), taken in the prediction pass


@dataclass(frozen=True)
class ScoreContext:
    """What a score-family method gets: the batch, its classes, the target layer's activations,
    and a way to ask the model's probability of the explained class for one image under a stack
    of masks drawn from them."""

    images: np.ndarray  # (B, H, W, C) float32
    classes: np.ndarray  # (B,) int32
    activations: np.ndarray  # (B, h, w, k) float32
    options: MethodOptions
    # (the image's position in the batch, channel maps (m, h, w)) -> (m,) its explained class's
    # probability in [0, 1] for each masked copy of it (a one-unit sigmoid's probability of the
    # explained sign; a segmentation's mean over the region; a regression's signed value)
    masked_probabilities: Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AttentionContext:
    """What an attention-family method gets: each attention layer's scores, in block order,
    and where the patch tokens are in the sequence."""

    attention: list[np.ndarray]  # per layer (B, heads, T, T)
    gradients: list[np.ndarray]  # per layer d score / d attention, (B, heads, T, T); [] when not asked for
    grid: tuple[int, int]  # patch rows, columns
    extra_tokens: int  # leading non-patch tokens (1 = class token)
    options: MethodOptions


def image_seed(image: np.ndarray, seed: int) -> np.random.Generator:
    """A random generator that depends only on the image's content and ``seed``, so noise for
    an image is the same whatever batch or position it is in."""
    return np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(image).tobytes())])
