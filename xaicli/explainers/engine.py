"""Explain a batch: one compiled step for predictions and every CAM method, and a compiled
input-gradient step that the gradient-family methods call as often as they need.

Batches smaller than ``batch_size`` are padded so each step is traced once.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ..errors import LayerError
from ..models import ModelInfo, class_scores
from ..render import normalize_maps

TOP_CLASS = -1  # requested class meaning "the top-scoring class of this image"


@dataclass(frozen=True)
class MethodOptions:
    """Settings of the methods that take any. ``baseline`` is the integrated-gradients
    starting input, (H, W, C) float32 in model-input units (already preprocessed)."""

    smoothgrad_samples: int = 25
    smoothgrad_noise: float = 0.15  # noise std as a fraction of each image's input range
    ig_steps: int = 32
    baseline: np.ndarray | None = None
    seed: int = 0


@dataclass(frozen=True)
class GradientContext:
    """What a gradient-family method gets: the padded batch, its classes, and a way to ask for
    d score / d input at any other inputs (same classes)."""

    images: np.ndarray  # (B, H, W, C) float32
    classes: np.ndarray  # (B,) int32
    options: MethodOptions
    gradient: Callable[[np.ndarray], np.ndarray]  # (B, H, W, C) -> (B, H, W, C)


@dataclass(frozen=True)
class BatchExplanation:
    """What one batch gives.

    probabilities, scores: (n, classes) float32; classes: (n,) int explained class per image;
    maps: method name -> (n, h, w) float32 in [0, 1] (h, w: the layer's grid for CAM methods,
    the model input's size for gradient methods).
    """

    probabilities: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    maps: dict[str, np.ndarray]


class Explainer:
    """Runs the requested methods on batches of at most ``batch_size`` images."""

    def __init__(self, probe: keras.Model, info: ModelInfo, layer_path: str | None,
                 cam_methods: dict[str, Callable], gradient_methods: dict[str, Callable],
                 batch_size: int, options: MethodOptions):
        self._probe = probe
        self._info = info
        self._layer_path = layer_path
        self._cam_methods = cam_methods
        self._gradient_methods = gradient_methods
        self._options = options
        self.batch_size = batch_size
        height, width = info.input_size
        images = tf.TensorSpec((batch_size, height, width, info.channels), tf.float32)
        classes = tf.TensorSpec((batch_size,), tf.int32)
        self._step = tf.function(self._predict_and_cams, input_signature=[images, classes])
        self._input_gradient = tf.function(self._score_gradient, input_signature=[images, classes])

    def _predict_and_cams(self, images: tf.Tensor, requested: tf.Tensor):
        with tf.GradientTape() as tape:
            outputs = self._probe(images, training=False)
            scores, probabilities = class_scores(tf.cast(outputs["logits"], tf.float32), self._info)
            top = tf.argmax(scores, axis=-1, output_type=tf.int32)
            classes = tf.where(requested == TOP_CLASS, top, requested)
            explained = tf.gather(scores, classes, batch_dims=1)
        maps = {}
        if self._cam_methods:
            # Images in a batch are independent at inference, so the gradient of the summed
            # scores is each image's own gradient. Differentiate the layer's own tensor, then
            # cast: a cast taken first (float16 models) would be a side branch with no gradient.
            gradients = tape.gradient(explained, outputs["activations"])
            if gradients is None:
                raise LayerError(f"layer {self._layer_path!r} does not feed the model's output; "
                                 "pick another with --layer")
            activations = tf.cast(outputs["activations"], tf.float32)
            gradients = tf.cast(gradients, tf.float32)
            maps = {name: tf.nn.relu(combine(activations, gradients)) for name, combine in self._cam_methods.items()}
        return probabilities, scores, classes, maps

    def _score_gradient(self, images: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(images)
            scores, _ = class_scores(tf.cast(self._probe(images, training=False)["logits"], tf.float32), self._info)
            explained = tf.gather(scores, classes, batch_dims=1)
        return tape.gradient(explained, images)

    def explain(self, images: np.ndarray, requested: np.ndarray) -> BatchExplanation:
        """Explain up to ``batch_size`` images.

        Args:
            images: (n, H, W, C) float32 preprocessed model inputs, 1 <= n <= batch_size.
            requested: (n,) int class per image, or ``TOP_CLASS``.
        """
        count = len(images)
        padding = self.batch_size - count
        batch = np.concatenate([images, np.zeros((padding, *images.shape[1:]), np.float32)])
        wanted = np.concatenate([requested, np.full(padding, TOP_CLASS)]).astype(np.int32)
        probabilities, scores, classes, cam_maps = self._step(tf.constant(batch), tf.constant(wanted))
        raw = {name: m.numpy() for name, m in cam_maps.items()}
        if self._gradient_methods:
            context = GradientContext(batch, classes.numpy(), self._options, self._gradient_at(classes))
            raw.update({name: method(context) for name, method in self._gradient_methods.items()})
        return BatchExplanation(
            probabilities=probabilities.numpy()[:count],
            scores=scores.numpy()[:count],
            classes=classes.numpy()[:count],
            maps={name: normalize_maps(raw[name][:count]) for name in raw},
        )

    def _gradient_at(self, classes: tf.Tensor) -> Callable[[np.ndarray], np.ndarray]:
        return lambda inputs: self._input_gradient(tf.constant(inputs, tf.float32), classes).numpy()


def image_seed(image: np.ndarray, seed: int) -> np.random.Generator:
    """A random generator that depends only on the image's content and ``seed``, so noise for
    an image is the same whatever batch or position it is in."""
    return np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(image).tobytes())])
