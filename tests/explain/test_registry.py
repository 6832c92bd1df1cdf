"""Properties every registered method must have, checked over the whole registry."""

import numpy as np
import pytest

from xaicli._explain.registry import REGISTRY
from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import model_for

CNN_IMAGES = np.random.default_rng(21).uniform(0, 255, size=(5, 16, 16, 3)).astype(np.float32)
VIT_IMAGES = np.random.default_rng(22).uniform(0, 255, size=(5, 12, 16, 3)).astype(np.float32)


def _maps(model, method, batch_size, images):
    run = prepare(RunConfig(model=model, inputs=(model,), out_dir=model.parent / "out",
                            methods=(method,), batch_size=batch_size))
    chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    return np.concatenate([run.explainer.explain(c, BEST).maps[method] for c in chunks])


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_method_contract(tiny_model, tiny_vit, method):
    model = model_for(method, tiny_model, tiny_vit)
    images = VIT_IMAGES if model == tiny_vit else CNN_IMAGES
    before = images.copy()
    one, many, again = (_maps(model, method, size, images) for size in (1, 32, 32))
    assert many.ndim == 3 and len(many) == len(images) and many.dtype == np.float32
    assert np.all(np.isfinite(many)) and many.min() >= 0.0 and many.max() <= 1.0
    assert np.all(many.max(axis=(1, 2)) == 1.0), "every image has its own normalized map"
    np.testing.assert_allclose(one, many, atol=1e-5, err_msg="batch size changes the maps")
    np.testing.assert_array_equal(many, again)  # deterministic
    np.testing.assert_array_equal(images, before)  # inputs untouched


def test_every_method_has_its_metadata():
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.family and spec.summary and spec.paper
        assert callable(spec.compute)
