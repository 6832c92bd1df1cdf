"""The one registry of explanation methods.

Importing this package does not import TensorFlow: each entry names its implementation as
``"module:function"`` and it is loaded only when a run needs it, so ``xai --help`` and
``xai methods`` stay instant. ``--method`` choices, ``xai methods`` and the tests that run
over every method all read ``REGISTRY``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method: what users see, and where its code lives."""

    name: str
    # 'cam': from a layer's activations and gradients; 'score': from a layer's activations and
    # masked forward passes; 'gradient': from d score / d input; 'attention': from a
    # transformer's attention scores
    family: str
    summary: str
    paper: str
    implementation: str  # "module:function", imported lazily
    attention_gradients: bool = False  # needs d score / d attention weights (one more backward pass)

    @property
    def needs_layer(self) -> bool:
        """CAM and score methods explain a convolutional layer; gradient methods the input."""
        return self.family in ("cam", "score")

    def load(self) -> Any:
        """Import and return the implementing function."""
        module, _, function = self.implementation.partition(":")
        return getattr(importlib.import_module(module), function)


REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="gradcam",
            family="cam",
            summary="channel weights = spatial mean of the class-score gradient; ReLU of the weighted sum",
            paper="Selvaraju et al. 2017, Grad-CAM, ICCV, arXiv:1610.02391",
            implementation="xaicli._explain.cam:gradcam",
        ),
        MethodSpec(
            name="gradcam++",
            family="cam",
            summary="channel weights from positive gradients weighted by second/third-order alphas",
            paper="Chattopadhay et al. 2018, Grad-CAM++, WACV, arXiv:1710.11063",
            implementation="xaicli._explain.cam:gradcam_plus_plus",
        ),
        MethodSpec(
            name="xgradcam",
            family="cam",
            summary="channel weights = gradients averaged with the activations as weights",
            paper="Fu et al. 2020, Axiom-based Grad-CAM, BMVC, arXiv:2008.02312",
            implementation="xaicli._explain.cam:xgradcam",
        ),
        MethodSpec(
            name="layercam",
            family="cam",
            summary="per-position weights: ReLU(gradient) times activation, summed over channels",
            paper="Jiang et al. 2021, LayerCAM, IEEE TIP 30",
            implementation="xaicli._explain.cam:layercam",
        ),
        MethodSpec(
            name="hirescam",
            family="cam",
            summary="gradient times activation, summed over channels (no spatial averaging)",
            paper="Draelos & Carin 2020, HiResCAM, arXiv:2011.08891",
            implementation="xaicli._explain.cam:hirescam",
        ),
        MethodSpec(
            name="eigencam",
            family="cam",
            summary="first principal component of the layer's activations (class-agnostic, no gradients)",
            paper="Muhammad & Yeasin 2020, Eigen-CAM, IJCNN, arXiv:2008.00299",
            implementation="xaicli._explain.cam:eigencam",
        ),
        MethodSpec(
            name="scorecam",
            family="score",
            summary="channel weights = softmax over channels of the class probability with each channel as an input mask; "
                    "ReLU of the weighted sum (--scorecam-max-channels)",
            paper="Wang et al. 2020, Score-CAM, CVPR Workshops, arXiv:1910.01279",
            implementation="xaicli._explain.scorecam:scorecam",
        ),
        MethodSpec(
            name="attention",
            family="attention",
            summary="attention rollout through a Vision Transformer's blocks (--head-fusion, --discard-ratio)",
            paper="Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers, ACL, arXiv:2005.00928",
            implementation="xaicli._explain.attention:attention_rollout",
        ),
        MethodSpec(
            name="grad-rollout",
            family="attention",
            summary="gradient-weighted rollout: per block mean_heads ReLU(dA * A), R <- R + that R from R = I; "
                    "class-specific",
            paper="Chefer, Gur & Wolf 2021, Generic Attention-model Explainability, ICCV, arXiv:2103.15679",
            implementation="xaicli._explain.attention:gradient_rollout",
            attention_gradients=True,
        ),
        MethodSpec(
            name="saliency",
            family="gradient",
            summary="|d score / d input|, max over colour channels; full resolution",
            paper="Simonyan et al. 2013, Deep Inside Convolutional Networks, arXiv:1312.6034",
            implementation="xaicli._explain.gradients:saliency",
        ),
        MethodSpec(
            name="smoothgrad",
            family="gradient",
            summary="saliency averaged over noisy copies of the image (--smoothgrad-samples/-noise)",
            paper="Smilkov et al. 2017, SmoothGrad, arXiv:1706.03825",
            implementation="xaicli._explain.gradients:smoothgrad",
        ),
        MethodSpec(
            name="integrated-gradients",
            family="gradient",
            summary="(input - baseline) x gradients averaged along the path from the baseline (--ig-steps/-baseline)",
            paper="Sundararajan et al. 2017, Axiomatic Attribution for Deep Networks, arXiv:1703.01365",
            implementation="xaicli._explain.gradients:integrated_gradients",
        ),
    )
}
