"""models/: every model shape loads, the probe explains the pre-activation logit, layers resolve."""

from pathlib import Path

import numpy as np
import pytest

from xaicli._errors import LayerError, ModelError, UsageError
from xaicli._explain.targets import BEST
from xaicli._inputs.geometry import to_model_input
from xaicli._models.inspect import inspect_model
from xaicli._models.layers import candidate_layers, resolve_layer
from xaicli._models.load import load_model
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import SIZE

IMAGES = np.random.default_rng(1).uniform(0, 255, size=(4, SIZE, SIZE, 3)).astype(np.float32)


def _prepare(path: Path, **options):
    return prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", **options))


@pytest.fixture(scope="module")
def reference(variant_models):
    run = _prepare(variant_models["functional.keras"])
    return run.explainer.explain(IMAGES, BEST)


VARIANTS = ["functional", "sequential", "nested", "activation_layer", "softmax_layer", "linear_head"]


@pytest.mark.parametrize("suffix", ["keras", "h5"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_model_shape_gives_the_same_gradcam(variant_models, reference, variant, suffix):
    path = variant_models[f"{variant}.{suffix}"]
    run = _prepare(path)
    assert run.layer.path == ("base/conv_b" if variant == "nested" else "conv_b")
    assert run.preprocess == "none"  # each variant has a Rescaling layer inside
    result = run.explainer.explain(IMAGES, BEST)
    np.testing.assert_array_equal(result.classes, reference.classes)
    np.testing.assert_allclose(result.scores, reference.scores, atol=1e-5)
    np.testing.assert_allclose(result.maps["gradcam"], reference.maps["gradcam"], atol=1e-5)
    assert result.maps["gradcam"].max() == 1.0


@pytest.mark.parametrize("variant", ["functional", "activation_layer", "softmax_layer", "sequential"])
def test_probe_explains_logits_not_probabilities(variant_models, variant):
    import keras

    path = variant_models[f"{variant}.keras"]
    model = keras.models.load_model(path, compile=False)
    probabilities = np.asarray(model(IMAGES))
    result = _prepare(path).explainer.explain(IMAGES, BEST)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-6)
    # softmax(scores) reproduces the model's output, and the scores are not probabilities
    shifted = np.exp(result.scores - result.scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(shifted / shifted.sum(axis=1, keepdims=True), probabilities, atol=1e-6)
    assert not np.allclose(result.scores, probabilities)


def test_binary_sigmoid_has_two_classes_with_negated_logit(tmp_path):
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(3, 3, name="conv")(inputs))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))
    model.save(tmp_path / "binary.keras")
    run = _prepare(tmp_path / "binary.keras", preprocess="unit")
    assert run.info.num_classes == 2
    images = IMAGES / 255
    result = run.explainer.explain(images, BEST)
    positive = np.asarray(model(images))[:, 0]
    np.testing.assert_allclose(result.probabilities[:, 1], positive, atol=1e-6)
    np.testing.assert_allclose(result.probabilities[:, 0], 1 - positive, atol=1e-6)
    np.testing.assert_allclose(result.scores[:, 0], -result.scores[:, 1])
    np.testing.assert_array_equal(result.classes, (positive > 0.5).astype(int))


def test_layer_choice_by_name_path_and_index(variant_models):
    info = inspect_model(load_model(variant_models["nested.keras"]))
    assert [l.path for l in candidate_layers(info, "conv")] == ["base/conv_a", "base/conv_b"]
    assert resolve_layer(info, "auto", "conv").path == "base/conv_b"
    assert resolve_layer(info, "conv_a", "conv").path == "base/conv_a"
    assert resolve_layer(info, "base/conv_a", "conv").path == "base/conv_a"
    assert resolve_layer(info, "0", "conv").path == "base/conv_a"
    assert resolve_layer(info, "-1", "conv").path == "base/conv_b"
    assert resolve_layer(info, "rescale", "conv").path == "rescale"  # any feature map may be named
    layer = next(l for l in info.layers if l.path == "base/conv_b")
    assert layer.type_name == "Conv2D" and layer.output_shape == (None, 12, 12, 6)


@pytest.mark.parametrize("spec,message", [
    ("nope", "layer 'nope' not found; candidates: base/conv_a, base/conv_b"),
    ("gap", r"layer 'gap' outputs \(None, 6\), not a feature map \(N, H, W, C\)"),
    ("5", "there are 2 candidate layers"),
])
def test_layer_errors_list_the_candidates(variant_models, spec, message):
    info = inspect_model(load_model(variant_models["nested.keras"]))
    with pytest.raises(LayerError, match=message):
        resolve_layer(info, spec, "conv")


def test_regex_alone_can_make_a_candidate(variant_models):
    info = inspect_model(load_model(variant_models["functional.keras"]))
    assert [l.path for l in candidate_layers(info, "rescale")] == ["rescale", "conv_a", "conv_b"]


def test_auto_with_no_candidates_says_what_to_do(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(layers.MaxPooling2D(name="pool")(inputs))))
    model.save(tmp_path / "noconv.keras")
    info = inspect_model(load_model(tmp_path / "noconv.keras"))
    with pytest.raises(LayerError, match="no convolutional layer found.*feature-map layers: .*pool.*--layer"):
        resolve_layer(info, "auto", "conv")


def test_model_of_any_size_needs_input_size(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((None, None, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv")(inputs))
    keras.Model(inputs, layers.Dense(2)(x)).save(tmp_path / "anysize.keras")
    model = load_model(tmp_path / "anysize.keras")
    with pytest.raises(UsageError, match="--input-size"):
        inspect_model(model)
    assert inspect_model(model, (20, 12)).input_size == (20, 12)


@pytest.mark.parametrize("name,content,message", [
    ("missing.keras", None, "model file not found"),
    ("model.onnx", b"x", "unsupported model format"),
    ("corrupt.h5", b"not hdf5 at all", "cannot load model"),
    ("corrupt.keras", b"not a zip", "cannot load model"),
])
def test_unusable_model_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_folder_that_is_not_a_savedmodel_gets_a_clear_message(tmp_path):
    with pytest.raises(ModelError, match="is a folder but not a SavedModel \\(no saved_model.pb\\); give a .keras or .h5"):
        load_model(tmp_path)


def test_custom_mean_std_equals_the_symmetric_preset(variant_models):
    path = variant_models["functional.keras"]
    images = IMAGES[:2]
    maps = []
    for options in ({"preprocess": "symmetric"}, {"preprocess": "custom", "mean": (0.5,), "std": (0.5, 0.5, 0.5)}):
        run = _prepare(path, **options)
        batch = np.stack([to_model_input(i.astype(np.uint8), run.info.input_size, 3, run.scaling) for i in images])
        maps.append(run.explainer.explain(batch, BEST).maps["gradcam"])
    np.testing.assert_array_equal(maps[0], maps[1])


@pytest.mark.parametrize("options,message", [
    ({"preprocess": "custom", "mean": (0.5,)}, "--preprocess custom goes with both --mean and --std"),
    ({"mean": (0.5,), "std": (0.5,)}, "--preprocess custom goes with both"),
    ({"preprocess": "custom", "mean": (0.1, 0.2), "std": (0.5,)}, "--mean has 2 values; the model takes 3 channel"),
    ({"preprocess": "custom", "mean": (0.1,), "std": (0.0,)}, "--std values must be positive"),
])
def test_custom_preprocessing_errors(variant_models, options, message):
    with pytest.raises(UsageError, match=message):
        _prepare(variant_models["functional.keras"], **options)


def _rewritten(path, destination, edit):
    """A copy of a .keras file whose metadata and config ``edit(metadata, config)`` changed."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(destination, "w") as target:
        metadata, config = json.loads(source.read("metadata.json")), json.loads(source.read("config.json"))
        edit(metadata, config)
        for entry in source.infolist():
            parts = {"metadata.json": metadata, "config.json": config}
            target.writestr(entry, json.dumps(parts[entry.filename]) if entry.filename in parts else source.read(entry))
    return destination


def _conv(config):
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "conv_a")


@pytest.mark.parametrize("option_value,loads", [(None, True), (3, False)])
def test_a_file_from_a_newer_keras_loads_when_its_new_options_hold_their_default(variant_models, tmp_path,
                                                                                  option_value, loads):
    """Keras adds options over time (3.13 gave initializers input_axes=None) and older Keras, the
    one Python 3.10 gets, refuses them. Options it does not know are dropped when they are None."""
    def from_the_future(metadata, config):
        metadata["keras_version"] = "99.0.0"
        _conv(config)["config"]["kernel_initializer"]["config"]["future_axes"] = None
        _conv(config)["config"]["future_option"] = option_value

    original = variant_models["functional.keras"]
    path = _rewritten(original, tmp_path / "future.keras", from_the_future)
    if not loads:
        with pytest.raises(ModelError, match=r"it was written by Keras 99\.0\.0, whose Conv2D option 'future_option' "
                                             r"this Keras .* does not have; install Keras 99\.0 or newer \(it needs "
                                             r"Python 3\.11 or newer\)$"):
            load_model(path)
        return
    model, reference = load_model(path), load_model(original)
    np.testing.assert_array_equal(model.predict(IMAGES, verbose=0), reference.predict(IMAGES, verbose=0))


def test_options_of_a_file_from_this_keras_are_left_alone(variant_models, tmp_path):
    def unknown_option(_metadata, config):
        _conv(config)["config"]["future_option"] = None

    with pytest.raises(ModelError, match="cannot load model"):
        load_model(_rewritten(variant_models["functional.keras"], tmp_path / "odd.keras", unknown_option))
