"""SavedModel folders written by Keras 3 model.export(): the serving function, input gradients."""

import numpy as np
import pytest

from xaicli._errors import LayerError
from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

IMAGES = np.random.default_rng(12).uniform(0, 1, size=(3, 10, 10, 3)).astype(np.float32)


def _model(head_units, activation):
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 3))
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    logits = layers.Dense(head_units, name="logits")(features)
    outputs = layers.Activation(activation, name="squash")(logits) if activation else logits
    return keras.Model(inputs, outputs), keras.Model(inputs, logits)


def _run(path, method="saliency"):
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", methods=(method,),
                            preprocess="none", ig_steps=8))
    return run, run.explainer.explain(IMAGES, BEST)


@pytest.mark.parametrize("units,activation", [(3, None), (1, "sigmoid")])
def test_exported_model_gives_the_same_scores_and_saliency(tmp_path, units, activation):
    model, _ = _model(units, activation)
    model.save(tmp_path / "model.keras")
    model.export(tmp_path / "served", verbose=False)
    for method in ("saliency", "integrated-gradients"):
        run, served = _run(tmp_path / "served", method)
        _, reference = _run(tmp_path / "model.keras", method)
        assert run.info.final_activation == (activation or "linear")
        np.testing.assert_allclose(served.probabilities, reference.probabilities, atol=1e-5)
        np.testing.assert_allclose(served.scores, reference.scores, atol=1e-4)
        np.testing.assert_allclose(served.maps[method], reference.maps[method], atol=1e-4)


def test_exported_softmax_model_explains_centred_log_probabilities(tmp_path):
    import tensorflow as tf

    model, logits_model = _model(4, "softmax")
    model.export(tmp_path / "served", verbose=False)
    run, served = _run(tmp_path / "served")
    assert run.info.final_activation == "softmax" and run.layer is None
    np.testing.assert_allclose(served.probabilities, np.asarray(model(IMAGES)), atol=1e-6)
    logits = np.asarray(logits_model(IMAGES))
    centred = logits - logits.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(served.scores, centred, atol=1e-4)
    images = tf.constant(IMAGES)
    with tf.GradientTape() as tape:
        tape.watch(images)
        z = logits_model(images)
        chosen = tf.gather(z - tf.reduce_mean(z, axis=1, keepdims=True), served.classes, batch_dims=1)
    saliency = np.abs(tape.gradient(chosen, images).numpy()).max(axis=-1)
    low, high = saliency.min(axis=(1, 2), keepdims=True), saliency.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(served.maps["saliency"], (saliency - low) / (high - low), atol=1e-4)


def test_cam_methods_on_an_exported_model_name_the_methods_that_work(tmp_path):
    model, _ = _model(3, "softmax")
    model.export(tmp_path / "served", verbose=False)
    with pytest.raises(LayerError, match="use a method that needs no layer: saliency, smoothgrad, integrated-gradients"):
        _run(tmp_path / "served", "gradcam")


def test_layer_messages_on_an_exported_model_say_what_works(tmp_path):
    from click.testing import CliRunner

    from xaicli.cli import main
    from xaicli._models.files import SERVED_LAYER_TYPE
    from xaicli._models.load import _ServedModel

    assert _ServedModel.__name__ == SERVED_LAYER_TYPE
    model, _ = _model(3, "softmax")
    model.export(tmp_path / "served", verbose=False)
    listed = CliRunner().invoke(main, ["layers", str(tmp_path / "served")])
    assert listed.exit_code == 0
    assert "keeps only its serving function" in listed.stderr and "saliency" in listed.stderr
    assert "--layer" not in listed.stderr
    with pytest.raises(LayerError, match="^--layer -1: this SavedModel keeps only its serving function.*saliency"):
        prepare(RunConfig(model=tmp_path / "served", inputs=(tmp_path,), out_dir=tmp_path / "out", layer="-1"))
