"""Score-CAM: gradient-free channel weights from how much each channel, used as a mask, keeps
the class's probability."""

from __future__ import annotations

import numpy as np

from ..contexts import ScoreContext
from ..registry import Option, method


@method("scorecam", family="score",
        summary="channel weights = softmax over channels of the class probability with each channel as an input "
                "mask; ReLU of the weighted sum (--scorecam-max-channels)",
        paper="Wang et al. 2020, Score-CAM, CVPR Workshops, arXiv:1910.01279",
        options=[Option("scorecam_max_channels", int, None,
                        "score only the N most active channels (faster); default every channel", minimum=1)])
def scorecam(context: ScoreContext) -> np.ndarray:
    """Score-CAM as the paper's Algorithm 1 states it (Wang et al. 2020).

    Each channel ``A_k`` is upsampled to the input size (bilinear; trilinear for volumes), min-max normalized to a mask
    ``H_k`` in [0, 1] (a constant channel masks everything), and the image is passed with that
    mask applied in model-input units. ``S_k`` is the explained output's *probability* for the
    class, ``f_c(x * H_k)`` (softmax, or a sigmoid unit's probability of the explained sign),
    not its logit; the weights are ``alpha = softmax_k(S_k)`` and the map is
    ``ReLU(sum_k alpha_k A_k)``: on a layer with signed activations (a residual add) the ReLU
    keeps negative evidence from showing as heat. With ``--scorecam-max-channels N``, only the
    N channels with the highest mean activation are scored and weighted: far fewer forward
    passes for a close map.

    Returns:
        (B, h, w) maps on the layer's grid (a volume model's (B, d, h, w)), >= 0, not yet normalized.
    """
    maps = []
    for position, activations in enumerate(context.activations):
        channels = _chosen_channels(activations, context.options.scorecam_max_channels)
        chosen = activations[..., channels]
        probabilities = context.masked_probabilities(position, np.moveaxis(chosen, -1, 0))
        weights = np.exp(probabilities - probabilities.max())
        maps.append(np.maximum(chosen @ (weights / weights.sum()), 0.0))
    return np.stack(maps).astype(np.float32)


def _chosen_channels(activations: np.ndarray, most: int | None) -> np.ndarray:
    """All channels, or the ``most`` with the highest mean activation (ties by index)."""
    count = activations.shape[-1]
    if most is None or most >= count:
        return np.arange(count)
    means = activations.reshape(-1, count).mean(axis=0)
    return np.sort(np.argsort(-means, kind="stable")[:most])
