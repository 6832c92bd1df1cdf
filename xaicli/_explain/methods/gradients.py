"""Gradient-family methods: maps at the model input's resolution from d score / d input.

Each method gets a ``GradientContext`` and returns (B, H, W) raw maps (a volume model's
(B, D, H, W)); the engine normalizes.
"""

from __future__ import annotations

import numpy as np

from ..contexts import GradientContext, image_seed
from ..registry import Option, method

IG_BASELINES = {
    "black": "an all-black image (pixels 0), preprocessed like the inputs",
    "white": "an all-white image (pixels 255), preprocessed like the inputs",
    "gray": "a mid-gray image (pixels 127.5), preprocessed like the inputs",
    "zeros": "model input 0 everywhere, whatever the preprocessing",
}


@method("saliency", family="gradient", summary="|d score / d input|, max over colour channels; full resolution",
        paper="Simonyan et al. 2013, Deep Inside Convolutional Networks, arXiv:1312.6034")
def saliency(context: GradientContext) -> np.ndarray:
    """Saliency (Simonyan et al. 2013): ``max_c |d y / d x_c|`` per pixel."""
    return np.abs(context.at_images).max(axis=-1)


def smoothgrad_noise(image: np.ndarray, samples: int, noise: float, seed: int) -> np.ndarray:
    """Gaussian noise for one image: (samples, H, W, C), std = ``noise`` x the image's value range."""
    sigma = noise * float(image.max() - image.min())
    return image_seed(image, seed).normal(0.0, sigma, size=(samples, *image.shape)).astype(np.float32)


@method("smoothgrad", family="gradient",
        summary="saliency averaged over noisy copies of the image (--smoothgrad-samples/-noise)",
        paper="Smilkov et al. 2017, SmoothGrad, arXiv:1706.03825",
        options=[Option("smoothgrad_samples", int, 25, "noisy copies averaged per image", minimum=1),
                 Option("smoothgrad_noise", float, 0.15, "noise std as a fraction of each image's input value range",
                        minimum=0)])
def smoothgrad(context: GradientContext) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the saliency map averaged over noisy copies,
    ``mean_s max_c |d y / d x_c (x + e_s)|``, ``e_s ~ N(0, (noise * (max x - min x))^2)``.

    With noise 0 it equals ``saliency``. The noise is drawn per image from its content, so the
    map does not depend on the batch.
    """
    options = context.options
    noise = np.stack([smoothgrad_noise(image, options.smoothgrad_samples, options.smoothgrad_noise, options.seed)
                      for image in context.images], axis=1)  # (samples, B, H, W, C), or (samples, B, D, H, W, C)
    total = np.zeros(context.images.shape[:-1], np.float64)
    for sample in noise:
        total += np.abs(context.gradient(context.images + sample)).max(axis=-1)
    return (total / options.smoothgrad_samples).astype(np.float32)


@method("integrated-gradients", family="gradient",
        summary="(input - baseline) x gradients averaged along the path from the baseline (--ig-steps/-baseline)",
        paper="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks, arXiv:1703.01365",
        options=[Option("ig_steps", int, 32, "steps on the path from the baseline to the image", minimum=1),
                 Option("ig_baseline", str, "black", "the path's start (also deletion's end: what removed pixels become)",
                        choices=IG_BASELINES)])
def integrated_gradients(context: GradientContext) -> np.ndarray:
    """Integrated Gradients (Sundararajan et al. 2017) with a midpoint Riemann sum:

        attribution = (x - b) * mean_{t = (s + 1/2) / m, s < m} d y / d x (b + t (x - b))
        map         = | sum_c attribution_c |

    ``b`` is the baseline (``--ig-baseline``) and ``m`` the steps (``--ig-steps``). The
    attributions add up to about ``y(x) - y(b)`` (completeness); the map shows their magnitude.
    """
    options = context.options
    baseline = np.broadcast_to(options.baseline, context.images.shape).astype(np.float32)
    difference = context.images - baseline
    total = np.zeros(context.images.shape, np.float64)
    for step in range(options.ig_steps):
        fraction = (step + 0.5) / options.ig_steps
        total += context.gradient(baseline + fraction * difference)
    attribution = difference * (total / options.ig_steps)
    return np.abs(attribution.sum(axis=-1)).astype(np.float32)
