"""Issue 4's model kinds: safe loading, custom layers, several outputs, multi-label, grayscale, info."""

import json
import textwrap

import numpy as np
import pytest

from xaicli._errors import ModelError, UsageError
from xaicli._explain.targets import BEST, GivenClass
from xaicli._models.inspect import open_model
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import xai


def _small_cnn(inputs, name_prefix=""):
    from keras import layers

    x = layers.Conv2D(3, 3, activation="relu", name=f"{name_prefix}conv")(inputs)
    return layers.GlobalAveragePooling2D()(x)


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(inputs, layers.Dense(2)(_small_cnn(x))).save(path)
    return path


def test_lambda_layers_are_refused_unless_unsafe(lambda_model):
    with pytest.raises(ModelError, match="Lambda layer holding Python code.*pass --unsafe"):
        open_model(lambda_model)
    _, info = open_model(lambda_model, unsafe=True)
    assert "double" in [layer.path for layer in info.layers]


def test_lambda_error_on_the_command_line_is_one_line(lambda_model, tmp_path):
    result = xai("info", lambda_model)
    assert result.exit_code == 2 and "--unsafe" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert xai("info", lambda_model, "--unsafe").exit_code == 0


CUSTOM_LAYER = '''
import keras

{decorator}
class Brighten(keras.layers.Layer):
    def call(self, inputs):
        return inputs + 1.0
'''


@pytest.mark.parametrize("decorated", [True, False])
def test_custom_layers_load_from_a_file(tmp_path, decorated):
    import keras
    from keras import layers

    decorator = '@keras.saving.register_keras_serializable(package="tests")' if decorated else ""
    source = tmp_path / f"custom_{decorated}.py"
    source.write_text(textwrap.dedent(CUSTOM_LAYER.format(decorator=decorator)))
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # the same class, to build the model
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.Dense(2)(_small_cnn(namespace["Brighten"](name="brighten")(inputs))))
    path = tmp_path / "custom.keras"
    model.save(path)
    _, info = open_model(path, custom_objects=str(source))
    assert any(layer.type_name == "Brighten" for layer in info.layers)


def test_unknown_custom_layer_names_the_class_and_the_option(tmp_path):
    source = tmp_path / "defs.py"
    source.write_text(textwrap.dedent(CUSTOM_LAYER.format(decorator="")).replace("Brighten", "Darken"))
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    path = tmp_path / "dark.keras"
    keras.Model(inputs, layers.Dense(2)(_small_cnn(namespace["Darken"](name="darken")(inputs)))).save(path)
    with pytest.raises(ModelError, match="custom class or function 'Darken'; pass --custom-objects"):
        open_model(path)
    with pytest.raises(UsageError, match="--custom-objects .*missing.py: cannot import it"):
        open_model(path, custom_objects=str(tmp_path / "missing.py"))


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """One trunk, a 3-class softmax head 'kind' and a 4-label sigmoid head 'tags'."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    features = _small_cnn(inputs)
    kind = layers.Dense(3, activation="softmax", name="kind")(features)
    tags = layers.Dense(4, activation="sigmoid", name="tags")(features)
    model = keras.Model(inputs, [kind, tags])
    path = tmp_path_factory.mktemp("heads") / "heads.h5"
    model.save(path)
    return path, model


IMAGES = np.random.default_rng(4).uniform(0, 1, size=(3, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("spec,expected", [("0", "kind"), ("1", "tags"), ("tags", "tags"), ("-1", "tags")])
def test_output_is_chosen_by_index_or_name(two_heads, spec, expected):
    _, info = open_model(two_heads[0], output=spec)
    assert info.head_path == expected and [o.head_path for o in info.outputs] == ["kind", "tags"]


def test_unknown_output_lists_the_outputs(two_heads):
    with pytest.raises(UsageError, match=r"--output 'nope' does not name an output; the model has 0: kind \(N, 3\), softmax; 1: tags"):
        open_model(two_heads[0], output="nope")


def test_multi_label_sigmoid_output_explains_the_chosen_label(two_heads):
    path, model = two_heads
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "o", output="tags",
                            target_class="2", preprocess="none"))
    assert run.info.num_classes == 4 and run.info.final_activation == "sigmoid"
    result = run.explainer.explain(IMAGES, GivenClass(run.target_class))
    np.testing.assert_array_equal(result.classes, [2, 2, 2])
    np.testing.assert_allclose(result.probabilities, np.asarray(model(IMAGES)[1]), atol=1e-6)
    # the explained score is the label's own logit: sigmoid(score) is its probability
    np.testing.assert_allclose(1 / (1 + np.exp(-result.scores[:, 2])), result.probabilities[:, 2], atol=1e-6)


def test_first_output_is_the_default_and_its_maps_differ_from_the_second(two_heads):
    path, _ = two_heads
    maps = {}
    for output in ("0", "1"):
        run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "o", output=output, preprocess="none"))
        maps[output] = run.explainer.explain(IMAGES, BEST).maps["gradcam"]
    assert not np.allclose(maps["0"], maps["1"])


def test_grayscale_model_explains_colour_images(image_folder, tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((10, 10, 1))
    keras.Model(inputs, layers.Dense(2, activation="softmax")(_small_cnn(inputs))).save(tmp_path / "gray.keras")
    out = tmp_path / "out"
    result = xai("run", tmp_path / "gray.keras", image_folder / "a.png", image_folder / "sub" / "b.JPG", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert (out / "a.png.gradcam.png").exists() and (out / "sub" / "b.JPG.gradcam.png").exists()


def test_more_than_one_input_is_refused(tmp_path):
    import keras
    from keras import layers

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    keras.Model([a, b], layers.Dense(2)(layers.Concatenate()([_small_cnn(a, "a_"), _small_cnn(b, "b_")]))).save(tmp_path / "two.keras")
    with pytest.raises(ModelError, match="the model has 2 inputs; only single-image models are supported"):
        open_model(tmp_path / "two.keras")


def test_info_text_and_json(two_heads):
    text = xai("info", two_heads[0], "--output", "tags")
    assert text.exit_code == 0, text.output
    assert "explained output" in text.stdout and "1: tags (N, 4), sigmoid, multilabel, can be explained" in text.stdout
    data = json.loads(xai("info", two_heads[0], "--json").stdout)
    assert data["format"].startswith("HDF5 (.h5) written by Keras 3")
    assert data["input_shape"] == [8, 8, 3] and data["classes"] == 3 and data["final_activation"] == "softmax"
    assert data["outputs"][1] == {"index": 1, "layer": "tags", "shape": [None, 4], "activation": "sigmoid",
                                  "kind": "multilabel", "explainable": True}
    assert data["explained_output"] == "kind" and data["output_choice"] == "the first of 2 (N, units) outputs; choose another with --output"
    assert data["auto_layer"] == "conv" and "gradcam" in data["methods"] and "saliency" in data["methods"]


def test_info_lists_only_input_gradient_methods_without_a_conv_layer(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((6, 6, 3))
    keras.Model(inputs, layers.Dense(2)(layers.Flatten()(inputs))).save(tmp_path / "flat.keras")
    data = json.loads(xai("info", tmp_path / "flat.keras", "--json").stdout)
    assert data["auto_layer"] is None
    assert data["methods"] == ["saliency", "smoothgrad", "integrated-gradients"]


def test_backbone_nested_two_levels_with_a_dropout_batchnorm_head(tmp_path):
    """outer -> base -> block (two levels), then BatchNorm/Dropout before the classifier; the
    map on the innermost conv equals the one from the same layers built flat."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(8)
    conv_a, conv_b = layers.Conv2D(4, 3, activation="relu", name="conv_a"), layers.Conv2D(5, 3, activation="relu", name="conv_b")
    norm, head = layers.BatchNormalization(name="norm"), layers.Dense(3, activation="softmax", name="head")

    block_in = keras.Input((14, 14, 4))
    block = keras.Model(block_in, conv_b(block_in), name="block")
    base_in = keras.Input((16, 16, 3))
    base = keras.Model(base_in, block(conv_a(base_in)), name="base")
    inputs = keras.Input((16, 16, 3))
    x = norm(layers.GlobalAveragePooling2D()(base(inputs, training=False)))
    nested = keras.Model(inputs, head(layers.Dropout(0.3)(x)))
    norm.set_weights([np.full(5, 2.0), np.full(5, 0.5), np.full(5, 0.1), np.full(5, 4.0)])  # not identity
    flat_in = keras.Input((16, 16, 3))
    flat = keras.Model(flat_in, head(layers.Dropout(0.3)(norm(layers.GlobalAveragePooling2D()(conv_b(conv_a(flat_in)))))))
    nested.save(tmp_path / "nested.keras")
    flat.save(tmp_path / "flat.keras")

    maps = {}
    for name in ("nested", "flat"):
        run = prepare(RunConfig(model=tmp_path / f"{name}.keras", inputs=(tmp_path,), out_dir=tmp_path / "o", preprocess="none"))
        maps[name] = (run.layer.path, run.explainer.explain(IMAGES.repeat(2, 1).repeat(2, 2)[:, :16, :16], BEST))
    assert maps["nested"][0] == "base/block/conv_b" and maps["flat"][0] == "conv_b"
    np.testing.assert_allclose(maps["nested"][1].probabilities, maps["flat"][1].probabilities, atol=1e-6)
    np.testing.assert_allclose(maps["nested"][1].maps["gradcam"], maps["flat"][1].maps["gradcam"], atol=1e-5)


def test_custom_layers_load_from_a_module_name(tmp_path, monkeypatch):
    import keras
    from keras import layers

    (tmp_path / "my_layers.py").write_text(textwrap.dedent(CUSTOM_LAYER.format(decorator="")).replace("Brighten", "Shift"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    inputs = keras.Input((8, 8, 3))
    path = tmp_path / "shift.keras"
    keras.Model(inputs, layers.Dense(2)(_small_cnn(my_layers.Shift(name="shift")(inputs)))).save(path)
    _, info = open_model(path, custom_objects="my_layers")
    assert any(layer.type_name == "Shift" for layer in info.layers)


def _recipe_models(folder):
    """The Grad-CAM recipe's model: a nested backbone's feature map as the first output and the
    softmax classifier as the second; and the same layers with only the classifier output."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(11)
    base_in = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(base_in)
    backbone = keras.Model(base_in, layers.Conv2D(5, 3, activation="relu", name="conv_b")(x), name="backbone")
    inputs = keras.Input((12, 12, 3))
    features = backbone(inputs)
    predictions = layers.Dense(3, activation="softmax", name="predictions")(layers.GlobalAveragePooling2D()(features))
    paths = {"both": folder / "recipe.keras", "classifier": folder / "classifier.keras"}
    keras.Model(inputs, [features, predictions]).save(paths["both"])
    keras.Model(inputs, predictions).save(paths["classifier"])
    return paths


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return _recipe_models(tmp_path_factory.mktemp("recipe"))


def test_feature_map_output_beside_the_classifier_is_ignored(recipe):
    _, info = open_model(recipe["both"])
    assert [o.kind for o in info.outputs] == ["segmentation", "classifier"]  # explainable both, if asked
    assert [o.explainable for o in info.outputs] == [True, True]
    assert info.head_path == "predictions" and info.num_classes == 3
    assert info.output_reason == "the only (N, units) output of 2"
    images = np.random.default_rng(12).uniform(0, 1, size=(3, 12, 12, 3)).astype(np.float32)
    maps = {}
    for name, path in recipe.items():
        run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "o", preprocess="none"))
        assert run.layer.path == "backbone/conv_b"
        maps[name] = run.explainer.explain(images, BEST)
    np.testing.assert_allclose(maps["both"].maps["gradcam"], maps["classifier"].maps["gradcam"], atol=1e-6)
    np.testing.assert_allclose(maps["both"].probabilities, maps["classifier"].probabilities, atol=1e-6)
    assert maps["both"].maps["gradcam"].max() > 0


def test_recipe_model_runs_and_says_which_output(recipe, image_folder, tmp_path):
    result = xai("run", recipe["both"], image_folder / "a.png", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "output predictions (the only (N, units) output of 2)" in result.stderr
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["resolved"]["explained_output"] == "predictions"
    assert manifest["resolved"]["output_choice"] == "the only (N, units) output of 2"
    info = xai("info", recipe["both"])
    assert "0: backbone/conv_b (N, 8, 8, 5), linear, segmentation, can be explained" in info.stdout
    assert "1: predictions (N, 3), softmax, classifier, can be explained" in info.stdout


def test_naming_the_feature_map_output_explains_it_per_pixel(recipe, image_folder, tmp_path):
    """A feature map cannot be told from a segmentation's logits: named with --output, it is
    explained as one, and the run line says so."""
    for spec in ("0", "conv_b"):
        result = xai("run", recipe["both"], image_folder / "a.png", "-o", tmp_path / spec, "--output", spec)
        assert result.exit_code == 0, result.output
        assert "segmentation (a per-pixel linear output of 5 channels)" in result.stderr


def test_naming_a_sequence_output_is_one_line(image_folder, tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    features = _small_cnn(inputs)
    sequence = layers.Reshape((-1, 1), name="tokens")(layers.Dense(4)(features))
    predictions = layers.Dense(3, activation="softmax", name="predictions")(features)
    keras.Model(inputs, [sequence, predictions]).save(tmp_path / "seq.keras")
    result = xai("run", tmp_path / "seq.keras", image_folder / "a.png", "-o", tmp_path / "out", "--output", "0")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert ("--output '0' is 0: tokens (N, 4, 1), linear, not an output shaped (N, units) or (N, h, w, C); "
            "outputs that can be explained: 1: predictions (N, 3), softmax") in line
    assert not (tmp_path / "out").exists()  # a run refused before it began leaves nothing behind

def test_unknown_custom_layer_names_the_module_the_file_records(tmp_path, monkeypatch):
    import importlib
    import sys

    import keras
    from keras import layers

    (tmp_path / "shading_layers.py").write_text(textwrap.dedent(CUSTOM_LAYER.format(decorator="")).replace(
        "Brighten", "Shade"))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("shading_layers")
    inputs = keras.Input((8, 8, 3))
    path = tmp_path / "shaded.keras"
    keras.Model(inputs, layers.Dense(2)(_small_cnn(module.Shade(name="shade")(inputs)))).save(path)
    monkeypatch.delitem(sys.modules, "shading_layers")
    with pytest.raises(ModelError, match="uses the custom class 'Shade' from module shading_layers: pass "
                                         "--custom-objects shading_layers"):
        open_model(path)
    _, info = open_model(path, custom_objects="shading_layers")
    assert "shade" in [layer.path for layer in info.layers]
