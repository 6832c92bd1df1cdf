"""Class activation maps from one forward and one backward pass per batch.

The shared part lives here once: run the probe under a gradient tape, pick each image's class,
take the gradient of that class's pre-activation score with respect to the target layer, apply
each method's combination, ReLU. A CAM method only supplies ``combine(activations, gradients)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ..errors import LayerError
from ..models import ModelInfo, class_scores
from ..render import normalize_maps

Combine = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
TOP_CLASS = -1  # requested class meaning "the top-scoring class of this image"


def gradcam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) before the ReLU.

    ``alpha_k = mean_ij dy_c/dA_ijk`` and ``map_ij = sum_k alpha_k A_ijk``.

    Args:
        activations, gradients: (N, h, w, k) float32.

    Returns:
        (N, h, w) float32, unnormalized.
    """
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def gradcam_plus_plus(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018) before the ReLU.

    With the paper's exponential score, the higher derivatives are powers of the first one and
    ``exp(score)`` cancels from alpha; it is left out entirely, because in float32 it overflows
    for logits above ~88 and only rescales the whole map, which normalization undoes:

        alpha_ijk = g_ijk^2 / (2 g_ijk^2 + sum_ab A_abk * g_ijk^3)
        w_k       = sum_ij alpha_ijk * ReLU(g_ijk)
        map_ij    = sum_k w_k A_ijk

    alpha is used as the paper derives it, not renormalized to sum to 1 over space as some
    libraries do: that renormalization is not in the derivation and changes the relative weight
    of channels. Where the denominator is 0, alpha is 0 (no evidence).

    Args:
        activations, gradients: (N, h, w, k) float32. Returns (N, h, w).
    """
    squared = tf.square(gradients)
    denominator = 2.0 * squared + tf.reduce_sum(activations, axis=(1, 2), keepdims=True) * squared * gradients
    usable = tf.abs(denominator) > 1e-12
    alpha = tf.where(usable, squared / tf.where(usable, denominator, 1.0), 0.0)
    weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def xgradcam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """XGrad-CAM (Fu et al. 2020) before the ReLU.

    ``w_k = sum_ij (A_ijk / sum_ab A_abk) g_ijk`` and ``map_ij = sum_k w_k A_ijk``; a channel whose
    activations sum to 0 gets weight 0. Shapes as ``gradcam``.
    """
    totals = tf.reduce_sum(activations, axis=(1, 2), keepdims=True)
    usable = tf.abs(totals) > 1e-12
    share = tf.where(usable, activations / tf.where(usable, totals, 1.0), 0.0)
    weights = tf.reduce_sum(share * gradients, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def layercam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """LayerCAM (Jiang et al. 2021): ``map_ij = sum_k ReLU(g_ijk) A_ijk``, a per-position weight."""
    return tf.reduce_sum(tf.nn.relu(gradients) * activations, axis=-1)


def hirescam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM (Draelos & Carin 2020): ``map_ij = sum_k g_ijk A_ijk``, the element-wise product
    summed over channels, which equals the score's first-order attribution to each position."""
    return tf.reduce_sum(gradients * activations, axis=-1)


@dataclass(frozen=True)
class BatchExplanation:
    """What one batch gives.

    probabilities, scores: (n, classes) float32; classes: (n,) int explained class per image;
    maps: method name -> (n, h, w) float32 in [0, 1].
    """

    probabilities: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    maps: dict[str, np.ndarray]


class CamExplainer:
    """Explains fixed-size batches with one compiled step shared by all requested CAM methods.

    Batches smaller than ``batch_size`` are padded, so the step is traced once.
    """

    def __init__(self, probe: keras.Model, info: ModelInfo, layer_path: str, combiners: dict[str, Combine],
                 batch_size: int):
        self._probe = probe
        self._layer_path = layer_path
        self._info = info
        self._combiners = combiners
        self.batch_size = batch_size
        height, width = info.input_size
        self._step = tf.function(
            self._compute,
            input_signature=[
                tf.TensorSpec((batch_size, height, width, info.channels), tf.float32),
                tf.TensorSpec((batch_size,), tf.int32),
            ],
        )

    def _compute(self, images: tf.Tensor, requested: tf.Tensor):
        with tf.GradientTape() as tape:
            outputs = self._probe(images, training=False)
            scores, probabilities = class_scores(tf.cast(outputs["logits"], tf.float32), self._info)
            top = tf.argmax(scores, axis=-1, output_type=tf.int32)
            classes = tf.where(requested == TOP_CLASS, top, requested)
            explained = tf.gather(scores, classes, batch_dims=1)
        # Images in a batch are independent at inference, so the gradient of the summed scores
        # is each image's own gradient. Differentiate the layer's own tensor, then cast: a cast
        # taken first (float16 models) would be a side branch with no gradient.
        gradients = tape.gradient(explained, outputs["activations"])
        if gradients is None:
            raise LayerError(f"layer {self._layer_path!r} does not feed the model's output; pick another with --layer")
        activations = tf.cast(outputs["activations"], tf.float32)
        gradients = tf.cast(gradients, tf.float32)
        maps = {name: tf.nn.relu(combine(activations, gradients)) for name, combine in self._combiners.items()}
        return probabilities, scores, classes, maps

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
        probabilities, scores, classes, maps = self._step(tf.constant(batch), tf.constant(wanted))
        return BatchExplanation(
            probabilities=probabilities.numpy()[:count],
            scores=scores.numpy()[:count],
            classes=classes.numpy()[:count],
            maps={name: normalize_maps(m.numpy()[:count]) for name, m in maps.items()},
        )
