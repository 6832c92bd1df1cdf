"""Model files written by Keras 2 (tf.keras / tf_keras) explain exactly like Keras 3 ones."""

import numpy as np
import pytest

from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

k2 = pytest.importorskip("tf_keras", reason="tf_keras (Keras 2) is needed to write legacy files; "
                                            "pip install 'xaicli[test]'")

IMAGES = np.random.default_rng(3).uniform(0, 255, size=(3, 16, 16, 3)).astype(np.float32)


def _keras2_models():
    layers = k2.layers
    inputs = k2.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(x)
    x = layers.DepthwiseConv2D(3, name="dw_conv")(x)  # Keras 2 writes a 'groups' key Keras 3 rejects
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    functional = k2.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x))
    sequential = k2.Sequential([
        k2.Input((16, 16, 3)), layers.Rescaling(1 / 255.0, name="rescale"),
        layers.Conv2D(4, 3, activation="relu", name="conv_a"), layers.DepthwiseConv2D(3, name="dw_conv"),
        layers.GlobalAveragePooling2D(name="gap"), layers.Dense(3, name="head"), layers.Softmax(name="probs"),
    ])
    sequential.set_weights(functional.get_weights())
    return functional, sequential


def _keras3_twin():
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(x)
    x = layers.DepthwiseConv2D(3, name="dw_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x))


@pytest.fixture(scope="module")
def legacy_files(tmp_path_factory):
    k2.utils.set_random_seed(1)
    folder = tmp_path_factory.mktemp("legacy")
    functional, sequential = _keras2_models()
    functional.save(folder / "keras2_functional.h5")
    sequential.save(folder / "keras2_sequential.h5")
    twin = _keras3_twin()
    twin.set_weights(functional.get_weights())
    twin.save(folder / "keras3.keras")
    twin.save(folder / "keras3.h5")
    return folder


def _gradcam(path):
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", layer="conv_a"))
    return run, run.explainer.explain(IMAGES, BEST)


def test_keras2_files_say_so_and_pick_the_same_layer(legacy_files):
    from xaicli._models.load import model_format

    assert model_format(legacy_files / "keras2_functional.h5").startswith("HDF5 (.h5) written by Keras 2.")
    run, _ = _gradcam(legacy_files / "keras2_functional.h5")
    assert run.info.preprocessing == ("rescale",) and run.preprocess == "none"


@pytest.mark.parametrize("name", ["keras2_functional.h5", "keras2_sequential.h5", "keras3.h5"])
def test_gradcam_agrees_across_keras2_and_keras3_files(legacy_files, name):
    _, reference = _gradcam(legacy_files / "keras3.keras")
    _, result = _gradcam(legacy_files / name)
    np.testing.assert_array_equal(result.classes, reference.classes)
    np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=1e-6)
    np.testing.assert_allclose(result.maps["gradcam"], reference.maps["gradcam"], atol=1e-5)


def test_keras2_savedmodel_folder_explains_like_the_keras3_file(legacy_files, tmp_path):
    functional, _ = _keras2_models()
    functional.set_weights(k2.models.load_model(legacy_files / "keras2_functional.h5", compile=False).get_weights())
    folder = tmp_path / "exported_by_keras2"
    functional.save(folder, save_format="tf")
    assert (folder / "keras_metadata.pb").exists()
    run, result = _gradcam(folder)
    _, reference = _gradcam(legacy_files / "keras3.keras")
    assert [l.path for l in run.info.layers if l.is_convolution] == ["conv_a", "dw_conv"]
    np.testing.assert_allclose(result.maps["gradcam"], reference.maps["gradcam"], atol=1e-5)


def _keras2_nested():
    """The transfer-learning shape in Keras 2: the backbone is a model inside the model."""
    layers = k2.layers
    base_in = k2.Input((16, 16, 3))
    base = k2.Model(base_in, layers.DepthwiseConv2D(3, name="dw_conv")(
        layers.Conv2D(4, 3, activation="relu", name="conv_a")(base_in)), name="base")
    inputs = k2.Input((16, 16, 3))
    x = base(layers.Rescaling(1 / 255.0, name="rescale")(inputs))
    return k2.Model(inputs, layers.Dense(3, activation="softmax", name="head")(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("save_format", ["h5", "tf"])
def test_keras2_nested_backbone_explains_like_the_flat_keras3_model(legacy_files, tmp_path, save_format):
    nested = _keras2_nested()
    nested.set_weights(k2.models.load_model(legacy_files / "keras2_functional.h5", compile=False).get_weights())
    path = tmp_path / ("nested.h5" if save_format == "h5" else "nested_savedmodel")
    nested.save(path, save_format=save_format)
    run, result = _gradcam(path)
    _, reference = _gradcam(legacy_files / "keras3.keras")
    assert run.layer.path == "base/conv_a"
    np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=1e-6)
    np.testing.assert_allclose(result.maps["gradcam"], reference.maps["gradcam"], atol=1e-5)


def _keras2_sequential_over_a_backbone():
    """The transfer-learning recipe of countless tutorials, in Keras 2: a Sequential whose first
    layer is the backbone model (keras-team/keras#20084: Keras 3 cannot read it)."""
    layers = k2.layers
    base_in = k2.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(layers.Rescaling(1 / 255.0, name="rescale")(base_in))
    base = k2.Model(base_in, layers.DepthwiseConv2D(3, name="dw_conv")(x), name="base")
    return k2.Sequential([base, layers.GlobalAveragePooling2D(name="gap"),
                          layers.Dense(3, activation="softmax", name="head")])


def test_keras2_sequential_over_a_backbone_explains_like_the_keras3_model(legacy_files, tmp_path):
    model = _keras2_sequential_over_a_backbone()
    model.set_weights(k2.models.load_model(legacy_files / "keras2_functional.h5", compile=False).get_weights())
    model.save(tmp_path / "recipe.h5")
    run = prepare(RunConfig(model=tmp_path / "recipe.h5", inputs=(tmp_path,), out_dir=tmp_path / "out"))
    assert run.layer.path == "base/dw_conv" and run.preprocess == "none"
    result = run.explainer.explain(IMAGES, BEST)
    reference_run = prepare(RunConfig(model=legacy_files / "keras3.keras", inputs=(tmp_path,), out_dir=tmp_path / "o"))
    reference = reference_run.explainer.explain(IMAGES, BEST)
    np.testing.assert_allclose(result.probabilities, reference.probabilities, atol=1e-6)
    np.testing.assert_allclose(result.maps["gradcam"], reference.maps["gradcam"], atol=1e-5)


def test_keras2_sequential_over_a_backbone_without_tf_keras_names_the_extra(legacy_files, tmp_path, monkeypatch):
    import sys

    from xaicli._errors import ModelError
    from xaicli._models.load import load_model

    _keras2_sequential_over_a_backbone().save(tmp_path / "recipe.h5")
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    with pytest.raises(ModelError, match=r"recipe.h5 is a Keras 2 Sequential model holding a nested model; loading "
                                         r"it needs Keras 2: pip install 'xaicli\[legacy\]'"):
        load_model(tmp_path / "recipe.h5")
