"""keras-hub image classifiers, as users fine-tune them today: built from a config (no weights),
saved with their preprocessor, and explained with the layer and scaling they were built with."""

from __future__ import annotations

import numpy as np
import pytest

from xaicli._explain.targets import BEST
from xaicli._inputs.geometry import to_model_input
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is in the test extra (Python 3.11+)")

SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(4)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[16], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32, 32],
        stackwise_num_blocks=[1, 2, 1], stackwise_num_strides=[1, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(SIZE, SIZE, 3))
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(SIZE, SIZE), scale=[1 / (255 * s) for s in STD], offset=[-m / s for m, s in zip(MEAN, STD)])
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3, preprocessor=preprocessor)
    path = tmp_path_factory.mktemp("hub") / "resnet_classifier.keras"
    classifier.save(path)
    return classifier, path


def _gradcam_reference(classifier, layer_name: str, images: np.ndarray) -> np.ndarray:
    import keras
    import tensorflow as tf

    backbone = classifier.backbone
    taps = keras.Model(backbone.inputs, [backbone.get_layer(layer_name).output, backbone.output])
    head = classifier.get_layer("predictions")
    with tf.GradientTape() as tape:
        activations, features = taps(tf.constant(images), training=False)
        logits = tf.matmul(tf.reduce_mean(features, axis=(1, 2)), head.kernel) + head.bias
        score = tf.gather(logits, tf.argmax(logits, axis=1), axis=1, batch_dims=1)
    gradients = tape.gradient(score, activations).numpy()
    cams = np.maximum((gradients.mean(axis=(1, 2), keepdims=True) * activations.numpy()).sum(-1), 0)
    low, high = cams.min(axis=(1, 2), keepdims=True), cams.max(axis=(1, 2), keepdims=True)
    return (cams - low) / np.where(high > low, high - low, 1)


def test_resnet_classifier_layer_scaling_and_gradcam(resnet):
    classifier, path = resnet
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out"))
    # the last block's output, after its residual add: not the shortcut convolution executed last
    assert run.layer.path == f"{classifier.backbone.name}/stack2_block0_out", run.layer_reason
    assert run.preprocess == "custom" and "keras-hub image converter" in run.preprocess_reason
    pixels = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    ours = to_model_input(pixels, run.info.input_size, 3, run.scaling)
    theirs = np.asarray(classifier.preprocessor.image_converter(pixels.astype(np.float32)))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    images = np.random.default_rng(3).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    maps = run.explainer.explain(images, BEST).maps["gradcam"]
    np.testing.assert_allclose(maps, _gradcam_reference(classifier, "stack2_block0_out", images), atol=2e-3)
