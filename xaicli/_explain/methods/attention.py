"""Attention rollout for Vision Transformers, plain and gradient-weighted, from the attention
weights (and their gradients) the probe captures."""

from __future__ import annotations

import numpy as np

from ..contexts import AttentionContext
from ..registry import Option, method

FUSE = {"mean": np.mean, "max": np.max, "min": np.min}


@method("attention", family="attention",
        summary="attention rollout through a Vision Transformer's blocks (--head-fusion, --discard-ratio)",
        paper="Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers, ACL, arXiv:2005.00928",
        options=[Option("head_fusion", str, "mean", "how each block's heads are combined",
                        choices={name: f"the heads' {name}" for name in FUSE}),
                 Option("discard_ratio", float, 0.0, "fraction of the lowest attention weights set to 0 in each block",
                        minimum=0, below=1)])
def attention_rollout(context: AttentionContext) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020).

    Per block, the heads are fused (``--head-fusion`` mean|max|min) into A (T x T); the lowest
    ``--discard-ratio`` fraction of A's entries is set to 0; the residual connection is
    accounted for by adding the identity; rows are normalized to sum to 1; and the blocks are
    multiplied in order, ``R = Â_L ... Â_1``. The map is the class token's row of R over the
    patch tokens, or, without a class token, the mean of the patch tokens' rows.

    Returns:
        (B, rows, columns) raw maps on the patch grid.
    """
    options = context.options
    tokens = context.attention[0].shape[-1]
    identity = np.eye(tokens)
    rollout = np.broadcast_to(identity, (len(context.attention[0]), tokens, tokens)).copy()
    for scores in context.attention:  # (B, heads, T, T)
        fused = FUSE[options.head_fusion](scores.astype(np.float64), axis=1)
        fused = _discard_lowest(fused, options.discard_ratio)
        step = fused + identity
        rollout = (step / step.sum(axis=-1, keepdims=True)) @ rollout
    return _on_grid(rollout, context)


@method("grad-rollout", family="attention",
        summary="gradient-weighted rollout: per block mean_heads ReLU(dA * A), R <- R + that R from R = I; "
                "class-specific",
        paper="Chefer, Gur & Wolf 2021, Generic Attention-model Explainability, ICCV, arXiv:2103.15679",
        attention_gradients=True)
def gradient_rollout(context: AttentionContext) -> np.ndarray:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021, the rule for self-attention).

    Per block, ``Abar = mean over heads of ReLU(dA * A)``, where ``dA`` is the gradient of the
    explained class's score with respect to that block's attention weights ``A``; from
    ``R = I``, each block in order gives ``R <- R + Abar R``. The map is read from R as in
    ``attention_rollout``. Unlike plain rollout it depends on the explained class.

    Returns:
        (B, rows, columns) raw maps on the patch grid.
    """
    tokens = context.attention[0].shape[-1]
    rollout = np.broadcast_to(np.eye(tokens), (len(context.attention[0]), tokens, tokens)).copy()
    for weights, gradients in zip(context.attention, context.gradients):  # (B, heads, T, T) each
        relevance = np.maximum(gradients.astype(np.float64) * weights, 0.0).mean(axis=1)
        rollout = rollout + relevance @ rollout
    return _on_grid(rollout, context)


def _on_grid(rollout: np.ndarray, context: AttentionContext) -> np.ndarray:
    """The class token's row of R over the patch tokens, or without one the mean of the patch
    tokens' rows, laid out on the patch grid: (B, rows, columns) float32."""
    extra = context.extra_tokens
    patches = rollout[:, 0, extra:] if extra else rollout[:, extra:, extra:].mean(axis=1)
    return patches.reshape(len(patches), *context.grid).astype(np.float32)


def _discard_lowest(fused: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the lowest ``ratio`` fraction of each image's entries (the threshold value is kept)."""
    if ratio <= 0:
        return fused
    flat = fused.reshape(len(fused), -1)
    threshold = np.quantile(flat, ratio, axis=1, method="lower")[:, None]
    return np.where(flat < threshold, 0.0, flat).reshape(fused.shape)
