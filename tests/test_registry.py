"""Properties every registered method must have, checked over the whole registry."""

import numpy as np
import pytest

from xaicli.config import RunConfig
from xaicli.explainers import REGISTRY
from xaicli.explainers.engine import TOP_CLASS
from xaicli.pipeline import prepare

from .conftest import SIZE

IMAGES = np.random.default_rng(21).uniform(0, 255, size=(5, SIZE, SIZE, 3)).astype(np.float32)


def _maps(model, method, batch_size):
    run = prepare(RunConfig(model=model, inputs=(model,), out_dir=model.parent / "out",
                            methods=(method,), batch_size=batch_size))
    chunks = [IMAGES[i:i + batch_size] for i in range(0, len(IMAGES), batch_size)]
    return np.concatenate([run.explainer.explain(c, np.full(len(c), TOP_CLASS)).maps[method] for c in chunks])


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_method_contract(tiny_model, method):
    before = IMAGES.copy()
    one, many, again = (_maps(tiny_model, method, size) for size in (1, 32, 32))
    assert many.ndim == 3 and len(many) == len(IMAGES) and many.dtype == np.float32
    assert np.all(np.isfinite(many)) and many.min() >= 0.0 and many.max() <= 1.0
    assert np.all(many.max(axis=(1, 2)) == 1.0), "every image has its own normalized map"
    np.testing.assert_allclose(one, many, atol=1e-5, err_msg="batch size changes the maps")
    np.testing.assert_array_equal(many, again)  # deterministic
    np.testing.assert_array_equal(IMAGES, before)  # inputs untouched


def test_every_method_has_its_metadata():
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.family and spec.summary and spec.paper
        assert callable(spec.load())
