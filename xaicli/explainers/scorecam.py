"""Score-CAM: gradient-free channel weights from how much each channel, used as a mask, keeps
the class score."""

from __future__ import annotations

import numpy as np

from .engine import ScoreContext


def scorecam(context: ScoreContext) -> np.ndarray:
    """Score-CAM (Wang et al. 2020).

    Each channel ``A_k`` is upsampled to the input size (bilinear), min-max normalized to a mask
    ``H_k`` in [0, 1] (a constant channel masks everything), and the image is scored with that
    mask applied in model-input units, ``s_k = y_c(x * H_k)``. The weights are
    ``softmax_k(s_k)`` and the map is ``sum_k w_k A_k`` (ReLU and normalization follow).
    With ``--scorecam-max-channels N``, only the N channels with the highest mean activation
    are scored and weighted: far fewer forward passes for a close map.

    Returns:
        (B, h, w) raw maps on the layer's grid.
    """
    maps = []
    for image, activations, target in zip(context.images, context.activations, context.classes):
        channels = _chosen_channels(activations, context.options.scorecam_max_channels)
        chosen = activations[:, :, channels]
        scores = context.masked_scores(image, np.moveaxis(chosen, -1, 0), int(target))
        weights = np.exp(scores - scores.max())
        maps.append(chosen @ (weights / weights.sum()))
    return np.stack(maps).astype(np.float32)


def _chosen_channels(activations: np.ndarray, most: int | None) -> np.ndarray:
    """All channels, or the ``most`` with the highest mean activation (ties by index)."""
    count = activations.shape[-1]
    if most is None or most >= count:
        return np.arange(count)
    means = activations.mean(axis=(0, 1))
    return np.sort(np.argsort(-means, kind="stable")[:most])
