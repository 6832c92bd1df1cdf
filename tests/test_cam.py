"""explainers/cam.py: Grad-CAM against hand-computed weights and an independent numpy computation."""

from pathlib import Path

import numpy as np
import pytest

from xaicli.config import RunConfig
from xaicli.explainers.cam import TOP_CLASS, gradcam
from xaicli.pipeline import prepare


def _explainer(model_path: Path, batch_size: int = 8, target_class: str | None = None, **options):
    config = RunConfig(model=model_path, inputs=(model_path,), out_dir=model_path.parent / "out",
                       batch_size=batch_size, target_class=target_class, preprocess="none", **options)
    return prepare(config)


def test_gradcam_weights_and_map_by_hand():
    import tensorflow as tf

    activations = np.zeros((1, 2, 2, 2), np.float32)
    activations[0, :, :, 0] = [[1, 2], [3, 4]]
    activations[0, :, :, 1] = [[0, 1], [0, 1]]
    gradients = np.zeros_like(activations)
    gradients[0, :, :, 0] = 0.5
    gradients[0, :, :, 1] = [[1, 3], [-1, 1]]
    # alpha = spatial means = (0.5, 1.0); map = 0.5 * A0 + 1.0 * A1
    result = gradcam(tf.constant(activations), tf.constant(gradients)).numpy()
    np.testing.assert_allclose(result[0], [[0.5, 2.0], [1.5, 3.0]])


@pytest.fixture(scope="module")
def gap_model(tmp_path_factory) -> Path:
    """x -> 1x1 conv with channels (x, -x) -> global average pool -> dense W, no biases.

    d logit_c / d A_ijk = W[k, c] / 16, so for class 0 (W[:, 0] = (1, 0.5)) the map is
    (1/16) x - (0.5/16) x = x / 32, and for class 1 (W[:, 1] = (-1, 2)) it is -3x / 16 < 0.
    """
    import keras
    from keras import layers

    inputs = keras.Input((4, 4, 1))
    conv = layers.Conv2D(2, 1, use_bias=False, name="conv")
    dense = layers.Dense(2, use_bias=False, activation="softmax", name="head")
    model = keras.Model(inputs, dense(layers.GlobalAveragePooling2D()(conv(inputs))))
    conv.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    dense.set_weights([np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)])
    path = tmp_path_factory.mktemp("gap") / "gap.keras"
    model.save(path)
    return path


def test_gradcam_hand_computed_map_peaks_on_the_bright_pixel(gap_model):
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) / 4
    image[0, 2, 1, 0] = 20.0  # the "object"
    run = _explainer(gap_model)
    result = run.explainer.explain(image, np.array([0]))
    expected = (image[0, :, :, 0] - image.min()) / (image.max() - image.min())  # x/32, min-max
    np.testing.assert_allclose(result.maps["gradcam"][0], expected, atol=1e-6)
    assert np.unravel_index(np.argmax(result.maps["gradcam"][0]), (4, 4)) == (2, 1)


def test_map_without_positive_evidence_is_zeros_not_nan(gap_model):
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    result = _explainer(gap_model).explainer.explain(image, np.array([1]))
    assert result.classes[0] == 1
    np.testing.assert_array_equal(result.maps["gradcam"][0], np.zeros((4, 4)))


@pytest.fixture(scope="module")
def flatten_model(tmp_path_factory):
    """x (8x8x3) -> conv 3x3 valid ReLU (3 channels) -> flatten -> dense (4) softmax, random weights."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(11)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax", name="head")(layers.Flatten()(x)))
    path = tmp_path_factory.mktemp("flat") / "flatten.h5"
    model.save(path)
    conv, head = model.get_layer("conv").get_weights(), model.get_layer("head").get_weights()
    return path, conv, head


def numpy_gradcam(images, conv_kernel, conv_bias, dense_kernel, dense_bias, classes=None):
    """Grad-CAM computed from scratch: valid 3x3 conv + ReLU, then an analytic gradient.

    logits = flatten(A) @ W + b, so d logit_c / dA = W[:, c] reshaped to A's (h, w, k).
    """
    n, height, width, _ = images.shape
    kh, kw, _, k = conv_kernel.shape
    h, w = height - kh + 1, width - kw + 1
    activations = np.zeros((n, h, w, k))
    for i in range(h):
        for j in range(w):
            patch = images[:, i:i + kh, j:j + kw, :]
            activations[:, i, j, :] = np.einsum("nabc,abck->nk", patch, conv_kernel) + conv_bias
    activations = np.maximum(activations, 0)
    logits = activations.reshape(n, -1) @ dense_kernel + dense_bias
    classes = logits.argmax(axis=1) if classes is None else classes
    maps = []
    for a, c in zip(activations, classes):
        gradient = dense_kernel[:, c].reshape(h, w, k)
        alpha = gradient.mean(axis=(0, 1))
        cam = np.maximum((a * alpha).sum(axis=-1), 0)
        span = cam.max() - cam.min()
        maps.append((cam - cam.min()) / span if span > 0 else np.zeros_like(cam))
    return np.stack(maps), classes


def test_gradcam_matches_independent_numpy_computation(flatten_model):
    path, (kernel, bias), (dense_kernel, dense_bias) = flatten_model
    images = np.random.default_rng(5).normal(size=(6, 8, 8, 3)).astype(np.float32)
    expected, classes = numpy_gradcam(images, kernel, bias, dense_kernel, dense_bias)
    result = _explainer(path).explainer.explain(images, np.full(6, TOP_CLASS))
    np.testing.assert_array_equal(result.classes, classes)
    np.testing.assert_allclose(result.maps["gradcam"], expected, atol=1e-4)
    # an explicitly requested class, not the top one
    expected_2, _ = numpy_gradcam(images, kernel, bias, dense_kernel, dense_bias, classes=np.full(6, 2))
    result_2 = _explainer(path).explainer.explain(images, np.full(6, 2))
    np.testing.assert_allclose(result_2.maps["gradcam"], expected_2, atol=1e-4)


def test_maps_do_not_depend_on_batch_size_and_inputs_are_untouched(flatten_model):
    path = flatten_model[0]
    images = np.random.default_rng(8).normal(size=(5, 8, 8, 3)).astype(np.float32)
    before = images.copy()
    maps = [
        np.concatenate([
            _explainer(path, batch_size=size).explainer.explain(images[i:i + size], np.full(len(images[i:i + size]), TOP_CLASS)).maps["gradcam"]
            for i in range(0, 5, size)
        ])
        for size in (1, 2, 32)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-6)
    np.testing.assert_array_equal(images, before)
    assert all(m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 for m in maps)


def test_mixed_precision_model_gives_the_float32_map(tmp_path):
    import keras
    from keras import layers

    def build(policy):
        inputs = keras.Input((8, 8, 3))
        x = layers.Conv2D(4, 3, activation="relu", name="conv", dtype=policy)(inputs)
        x = layers.GlobalAveragePooling2D(dtype=policy)(x)
        return keras.Model(inputs, layers.Dense(3, activation="softmax", name="head", dtype="float32")(x))

    keras.utils.set_random_seed(4)
    full, half = build("float32"), build("mixed_float16")
    half.set_weights(full.get_weights())
    full.save(tmp_path / "full.keras")
    half.save(tmp_path / "half.keras")
    images = np.random.default_rng(2).uniform(size=(3, 8, 8, 3)).astype(np.float32)
    maps = [_explainer(tmp_path / name).explainer.explain(images, np.full(3, 0)).maps["gradcam"]
            for name in ("full.keras", "half.keras")]
    assert maps[1].max() == 1.0
    np.testing.assert_allclose(maps[1], maps[0], atol=2e-2)


def test_layer_that_does_not_feed_the_explained_output_is_an_error(tmp_path):
    import keras
    from keras import layers

    from xaicli.errors import LayerError

    inputs = keras.Input((8, 8, 3))
    main = layers.Dense(2, name="main")(layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv_main")(inputs)))
    side = layers.Dense(2, name="side")(layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv_side")(inputs)))
    keras.Model(inputs, [main, side]).save(tmp_path / "two_heads.keras")
    run = _explainer(tmp_path / "two_heads.keras", layer="conv_side")
    with pytest.raises(LayerError, match="'conv_side' does not feed the model's output"):
        run.explainer.explain(np.zeros((1, 8, 8, 3), np.float32), np.array([TOP_CLASS]))
