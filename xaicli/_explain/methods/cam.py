"""Class activation maps: how each CAM method combines a layer's activations and gradients.

Everything shared (the tape, class choice, ReLU, normalization, batching) lives in
``explainer.py``; a CAM method is only ``combine(activations, gradients) -> map before ReLU``,
run inside the compiled step. TensorFlow is imported inside each function, so that the registry
reads this module without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import method

if TYPE_CHECKING:
    import tensorflow as tf


@method("gradcam", family="cam",
        summary="channel weights = spatial mean of the class-score gradient; ReLU of the weighted sum",
        paper="Selvaraju et al. 2017, Grad-CAM, ICCV, arXiv:1610.02391")
def gradcam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) before the ReLU.

    ``alpha_k = mean_ij dy_c/dA_ijk`` and ``map_ij = sum_k alpha_k A_ijk``.

    Args:
        activations, gradients: (N, h, w, k) float32; a volume model's (N, d, h, w, k), whose
            positions are its voxels (here and in every CAM method).

    Returns:
        (N, h, w) (or (N, d, h, w)) float32, unnormalized.
    """
    import tensorflow as tf

    weights = tf.reduce_mean(gradients, axis=_positions(gradients), keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


def _positions(tensor: tf.Tensor) -> tuple[int, ...]:
    """The spatial axes of an (N, h, w, k) or a volume's (N, d, h, w, k) tensor."""
    return tuple(range(1, tensor.shape.rank - 1))


@method("gradcam++", family="cam",
        summary="channel weights from positive gradients weighted by second/third-order alphas",
        paper="Chattopadhay et al. 2018, Grad-CAM++, WACV, arXiv:1710.11063")
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
    import tensorflow as tf

    squared = tf.square(gradients)
    positions = _positions(activations)
    denominator = 2.0 * squared + tf.reduce_sum(activations, axis=positions, keepdims=True) * squared * gradients
    usable = tf.abs(denominator) > 1e-12
    alpha = tf.where(usable, squared / tf.where(usable, denominator, 1.0), 0.0)
    weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=positions, keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


@method("xgradcam", family="cam",
        summary="channel weights = gradients averaged with the activations as weights",
        paper="Fu et al. 2020, Axiom-based Grad-CAM, BMVC, arXiv:2008.02312")
def xgradcam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """XGrad-CAM (Fu et al. 2020) before the ReLU.

    ``w_k = sum_ij (A_ijk / sum_ab A_abk) g_ijk`` and ``map_ij = sum_k w_k A_ijk``; a channel whose
    activations sum to 0 gets weight 0. Shapes as ``gradcam``.
    """
    import tensorflow as tf

    positions = _positions(activations)
    totals = tf.reduce_sum(activations, axis=positions, keepdims=True)
    usable = tf.abs(totals) > 1e-12
    share = tf.where(usable, activations / tf.where(usable, totals, 1.0), 0.0)
    weights = tf.reduce_sum(share * gradients, axis=positions, keepdims=True)
    return tf.reduce_sum(weights * activations, axis=-1)


@method("layercam", family="cam",
        summary="per-position weights: ReLU(gradient) times activation, summed over channels",
        paper="Jiang et al. 2021, LayerCAM, IEEE TIP 30")
def layercam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """LayerCAM (Jiang et al. 2021): ``map_ij = sum_k ReLU(g_ijk) A_ijk``, a per-position weight."""
    import tensorflow as tf

    return tf.reduce_sum(tf.nn.relu(gradients) * activations, axis=-1)


@method("hirescam", family="cam",
        summary="gradient times activation, summed over channels (no spatial averaging)",
        paper="Draelos & Carin 2020, HiResCAM, arXiv:2011.08891")
def hirescam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM (Draelos & Carin 2020): ``map_ij = sum_k g_ijk A_ijk``, the element-wise product
    summed over channels, which equals the score's first-order attribution to each position."""
    import tensorflow as tf

    return tf.reduce_sum(gradients * activations, axis=-1)


@method("eigencam", family="cam",
        summary="first principal component of the layer's activations (class-agnostic, no gradients)",
        paper="Muhammad & Yeasin 2020, Eigen-CAM, IJCNN, arXiv:2008.00299")
def eigencam(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations' first principal component.

    Positions are samples and channels are features: centre over positions, take the first right
    singular vector ``v``, and project, ``map_ij = (A_ij - mean A) . v``. An eigenvector's sign is
    arbitrary, so it is chosen to make the map correlate positively with the channel-summed
    activations: maps are never randomly inverted. Class-agnostic; ``gradients`` are unused.
    """
    import tensorflow as tf

    del gradients
    shape = tf.shape(activations)
    positions = tf.reshape(activations, (shape[0], -1, shape[-1]))
    centred = positions - tf.reduce_mean(positions, axis=1, keepdims=True)
    _, _, vectors = tf.linalg.svd(centred)
    projection = tf.linalg.matvec(centred, vectors[:, :, 0])
    energy = tf.reduce_sum(positions, axis=-1)
    energy = energy - tf.reduce_mean(energy, axis=1, keepdims=True)
    sign = tf.where(tf.reduce_sum(projection * energy, axis=1, keepdims=True) < 0, -1.0, 1.0)
    return tf.reshape(sign * projection, shape[:-1])
