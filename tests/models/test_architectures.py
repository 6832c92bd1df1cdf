"""The CNNs people fine-tune: every keras.applications family, flat (include_top=True) and nested
as a backbone (Input -> backbone -> GlobalAveragePooling -> Dropout -> Dense softmax), built with
random weights at small inputs and saved to disk. For each: the auto layer is the end of the last
conv block, the auto preprocessing is the family's, and Grad-CAM equals a GradientTape reference
on that layer. Marked ``architectures``: ``pytest -m 'not architectures'`` skips them locally."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

pytestmark = pytest.mark.architectures

FEEDS_POOLING = "<feeds the pooling>"  # an unnamed layer: the one the global pooling reads


@dataclass(frozen=True)
class Family:
    build: str  # keras.applications constructor
    size: int  # smallest input whose last stage is larger than 1x1
    layer: str  # the expected auto layer (in the backbone), or FEEDS_POOLING
    preprocess: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def kwargs(self) -> dict[str, object]:
        return dict(self.options)


FAMILIES = {
    "VGG16": Family("VGG16", 64, "block5_conv3", "caffe"),
    "ResNet50": Family("ResNet50", 64, "conv5_block3_out", "caffe"),
    "ResNet50V2": Family("ResNet50V2", 64, "post_relu", "symmetric"),
    "InceptionV3": Family("InceptionV3", 107, "mixed10", "symmetric"),
    "InceptionResNetV2": Family("InceptionResNetV2", 107, "conv_7b_ac", "symmetric"),
    "Xception": Family("Xception", 71, "block14_sepconv2_act", "symmetric"),
    "MobileNet": Family("MobileNet", 64, "conv_pw_13_relu", "symmetric", (("alpha", 0.25),)),
    "MobileNetV2": Family("MobileNetV2", 64, "out_relu", "symmetric", (("alpha", 0.35),)),
    "MobileNetV3Small": Family("MobileNetV3Small", 64, FEEDS_POOLING, "none", (("alpha", 0.75),)),
    "EfficientNetB0": Family("EfficientNetB0", 64, "top_activation", "none"),
    "EfficientNetV2B0": Family("EfficientNetV2B0", 64, "top_activation", "none"),
    "DenseNet121": Family("DenseNet121", 64, "relu", "torch"),
    "NASNetMobile": Family("NASNetMobile", 64, FEEDS_POOLING, "symmetric"),
    "ConvNeXtTiny": Family("ConvNeXtTiny", 64, FEEDS_POOLING, "none"),
}


@dataclass
class Built:
    path: object  # the saved model file
    layer: str  # expected auto layer path
    reference: Callable[[np.ndarray], np.ndarray]  # Grad-CAM of the top class, (N, h, w)


def _target(backbone, family: Family, flat: bool):
    """The expected auto layer's output tensor in the in-memory backbone, and its name. An
    unnamed target is what the head's global pooling reads, which in ConvNeXt is a residual
    ``x + y``: an operation of the graph, not a layer."""
    import keras

    if family.layer != FEEDS_POOLING:
        tensor = backbone.get_layer(family.layer).output
    elif flat:
        tensor = [l for l in backbone.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)][-1].input
    else:
        tensor = backbone.output
    return tensor, tensor._keras_history.operation.name


def _build(family: Family, flat: bool, folder) -> Built:
    import keras

    keras.utils.set_random_seed(0)
    constructor = getattr(keras.applications, family.build)
    shape = (family.size, family.size, 3)
    if flat:
        model = backbone = constructor(weights=None, input_shape=shape, classes=3, **family.kwargs)
    else:
        backbone = constructor(weights=None, include_top=False, input_shape=shape, **family.kwargs)
        inputs = keras.Input(shape)
        x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
        x = keras.layers.Dropout(0.2)(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    tensor, name = _target(backbone, family, flat)
    path = folder / f"{family.build}_{'flat' if flat else 'nested'}.keras"
    model.save(path)
    return Built(path, name if flat else f"{backbone.name}/{name}",
                 _reference(model, backbone, tensor, flat))


def _reference(model, backbone, target, flat: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Grad-CAM computed directly: GradientTape on the layer's output inside the Keras model,
    the logit taken before the head's softmax by hand."""
    import keras
    import tensorflow as tf

    taps = keras.Model(backbone.inputs, [target, model.layers[-1].input if flat else backbone.output])
    head = model.layers[-1]

    def logits_of(features):
        if isinstance(head, keras.layers.Activation):  # MobileNetV3: logits, then an Activation
            return features
        if not flat:
            features = tf.reduce_mean(features, axis=(1, 2))
        return tf.matmul(features, head.kernel) + head.bias

    def gradcam(images: np.ndarray) -> np.ndarray:
        with tf.GradientTape() as tape:
            activations, features = taps(tf.constant(images), training=False)
            logits = logits_of(features)
            score = tf.gather(logits, tf.argmax(logits, axis=1), axis=1, batch_dims=1)
        gradients = tape.gradient(score, activations).numpy()
        cams = np.maximum((gradients.mean(axis=(1, 2), keepdims=True) * activations.numpy()).sum(-1), 0)
        low, high = cams.min(axis=(1, 2), keepdims=True), cams.max(axis=(1, 2), keepdims=True)
        return (cams - low) / np.where(high > low, high - low, 1)

    return gradcam


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    spec = FAMILIES[request.param]
    return spec, {flat: _build(spec, flat, folder) for flat in (True, False)}


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "nested"])
def test_auto_layer_preprocessing_and_gradcam(family, flat):
    spec, built = family
    built = built[flat]
    run = prepare(RunConfig(model=built.path, inputs=(built.path,), out_dir=built.path.parent / "out"))
    assert run.layer.path == built.layer, run.layer_reason
    assert run.layer_reason.startswith("auto: ")
    assert run.preprocess == spec.preprocess, run.preprocess_reason
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, spec.size, spec.size, 3)).astype(np.float32)
    maps = run.explainer.explain(images, BEST).maps["gradcam"]
    np.testing.assert_allclose(maps, built.reference(images), atol=2e-3)
