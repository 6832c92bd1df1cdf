"""Model files written by the newest Keras (tests/fixtures/newer_keras, made by its make.py) load
and explain, with the same maps, under every Keras the suite runs with: on Python 3.10 that is
Keras 3.12, which does not know options the newer Keras writes into every file."""

import logging

import keras
import numpy as np
import pytest

from xaicli._errors import ModelError
from xaicli._explain.targets import BEST
from xaicli._models.load import load_model
from xaicli._models.versions import version_tuple, written_by
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "newer_keras"
EXPECTED = np.load(FIXTURES / "expected.npz")
WRITER = written_by(FIXTURES / "every_layer_type.keras")
OLDER_HERE = version_tuple(keras.__version__) < version_tuple(WRITER)


def test_the_fixtures_come_from_a_keras_at_least_as_new_as_this_one():
    assert version_tuple(WRITER) >= version_tuple(keras.__version__) and WRITER.startswith("3.")
    assert written_by(FIXTURES / "every_layer_type.h5") == WRITER


@pytest.mark.parametrize("name", ["every_layer_type.keras", "every_layer_type.h5"])
def test_every_layer_type_loads_and_gives_the_newer_keras_maps(name, caplog):
    path = FIXTURES / name
    with caplog.at_level(logging.DEBUG, logger="xaicli"):
        run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "unused", layer="block_out",
                                methods=("gradcam", "saliency", "scorecam"), batch_size=4))
    if OLDER_HERE:  # the options this Keras lacks were dropped, and --debug says which
        assert "dropped BatchNormalization.renorm=false" in caplog.text
        assert "dropped GlorotUniform.input_axes=null" in caplog.text
    result = run.explainer.explain(EXPECTED["images"], BEST)
    np.testing.assert_allclose(result.probabilities, EXPECTED["probabilities"], atol=1e-5)
    for method in ("gradcam", "saliency", "scorecam"):
        np.testing.assert_allclose(result.maps[method], EXPECTED[method], atol=1e-4, err_msg=method)


def test_a_newer_option_away_from_its_default_is_one_line_naming_both_versions():
    path = FIXTURES / "renorm.keras"
    if not version_tuple(keras.__version__) < (3, 14):
        assert load_model(path).get_layer("renorm").renorm  # this Keras has the option
        return
    with pytest.raises(ModelError) as raised:
        load_model(path)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400
    assert (f"written by Keras {WRITER}, whose BatchNormalization option renorm=true this Keras {keras.__version__} "
            "does not have (it came with Keras 3.14); install Keras 3.14 or newer (it needs Python 3.11 or newer)"
            in message)
