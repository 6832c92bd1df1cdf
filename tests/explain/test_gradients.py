"""_explain/methods/gradients.py: saliency, SmoothGrad and Integrated Gradients against numpy."""

import numpy as np
import pytest

from xaicli._explain.methods.gradients import smoothgrad_noise
from xaicli._explain.targets import BEST, GivenClass
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from .numpy_reference import (forward_and_gradients, integrated_gradients_maps, saliency_maps,
                              smoothgrad_maps)
from .test_cam import reference_model  # noqa: F401  (the shared module-scoped model fixture)

IMAGES = np.random.default_rng(9).normal(size=(5, 8, 8, 3)).astype(np.float32)


def _explain(path, method, classes=None, **options):
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", methods=(method,),
                            preprocess="none", batch_size=4, **options))
    target = BEST if classes is None else GivenClass(classes)
    chunks = [slice(0, 4), slice(4, 5)]  # a full batch and a padded one
    results = [run.explainer.explain(IMAGES[c], target) for c in chunks]
    return (np.concatenate([r.maps[method] for r in results]),
            np.concatenate([r.classes for r in results]))


@pytest.mark.parametrize("requested", [None, 1])
def test_saliency_matches_numpy(reference_model, requested):
    path, reference, _ = reference_model
    maps, classes = _explain(path, "saliency", requested)
    _, _, expected_classes, _ = forward_and_gradients(IMAGES, reference, None if requested is None else [requested] * 5)
    np.testing.assert_array_equal(classes, expected_classes)
    assert maps.shape == (5, 8, 8)  # full input resolution
    np.testing.assert_allclose(maps, saliency_maps(IMAGES, reference, classes), atol=1e-4)


def test_smoothgrad_matches_numpy_with_the_same_noise(reference_model):
    path, reference, _ = reference_model
    maps, classes = _explain(path, "smoothgrad", smoothgrad_samples=6, smoothgrad_noise=0.2)
    noises = np.stack([smoothgrad_noise(image, 6, 0.2, seed=0) for image in IMAGES])
    assert noises.std() > 0.1
    np.testing.assert_allclose(maps, smoothgrad_maps(IMAGES, reference, classes, noises), atol=1e-4)


def test_smoothgrad_without_noise_is_saliency(reference_model):
    path, _, _ = reference_model
    smooth, _ = _explain(path, "smoothgrad", smoothgrad_samples=3, smoothgrad_noise=0.0)
    plain, _ = _explain(path, "saliency")
    np.testing.assert_allclose(smooth, plain, atol=1e-6)


@pytest.mark.parametrize("baseline_name,baseline_value", [("zeros", 0.0), ("white", 255.0)])
def test_integrated_gradients_matches_numpy(reference_model, baseline_name, baseline_value):
    path, reference, _ = reference_model
    maps, classes = _explain(path, "integrated-gradients", ig_steps=16, ig_baseline=baseline_name)
    baseline = np.full_like(IMAGES, baseline_value)  # preprocess 'none': pixels are model inputs
    expected = integrated_gradients_maps(IMAGES, reference, classes, baseline, steps=16)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
