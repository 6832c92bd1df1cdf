"""_explain/methods/cam.py: Grad-CAM against hand-computed weights and an independent numpy computation."""

from pathlib import Path

import numpy as np
import pytest

from xaicli._explain.methods.cam import eigencam, gradcam, gradcam_plus_plus
from xaicli._explain.registry import REGISTRY
from xaicli._explain.targets import BEST, GivenClass
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from .numpy_reference import Reference, cam_maps, forward_and_gradients, scorecam_maps


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
    result = run.explainer.explain(image, GivenClass(0))
    expected = (image[0, :, :, 0] - image.min()) / (image.max() - image.min())  # x/32, min-max
    np.testing.assert_allclose(result.maps["gradcam"][0], expected, atol=1e-6)
    assert np.unravel_index(np.argmax(result.maps["gradcam"][0]), (4, 4)) == (2, 1)


def test_map_without_positive_evidence_is_zeros_not_nan(gap_model):
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    result = _explainer(gap_model).explainer.explain(image, GivenClass(1))
    assert result.classes[0] == 1
    np.testing.assert_array_equal(result.maps["gradcam"][0], np.zeros((4, 4)))


CAM_METHODS = [name for name, spec in REGISTRY.items() if spec.family == "cam"]


# The target layer after a ReLU, where a missing ReLU or a flipped sign cannot show, and after a
# residual add of two linear convolutions (signed activations), under a softmax head and under a
# one-unit sigmoid head (two classes, scores -z and z).
REFERENCE_KINDS = ["relu-softmax", "residual-softmax", "residual-sigmoid"]


@pytest.fixture(scope="module", params=REFERENCE_KINDS)
def reference_model(request, tmp_path_factory):
    """A model of tests/numpy_reference.py, random weights, saved as .h5; (path, Reference, layer)."""
    import keras
    from keras import layers

    residual, sigmoid = request.param.startswith("residual"), request.param.endswith("sigmoid")
    keras.utils.set_random_seed(11)
    inputs = keras.Input((8, 8, 3))
    if residual:
        convs = ("conv_a", "conv_b")
        target = layers.Add(name="add")([layers.Conv2D(3, 3, name=name)(inputs) for name in convs])
    else:
        convs = ("conv",)
        target = layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    x = layers.Dense(10, activation="relu", name="hidden")(layers.Flatten()(target))
    head = layers.Dense(1, activation="sigmoid", name="head") if sigmoid else layers.Dense(4, "softmax", name="head")
    model = keras.Model(inputs, head(x))
    path = tmp_path_factory.mktemp("reference") / f"{request.param}.h5"
    model.save(path)
    return path, Reference.from_keras(model, convs, relu=not residual, sigmoid=sigmoid), "add" if residual else "conv"


def _signed_somewhere(cam_before_relu: np.ndarray) -> bool:
    """Some image's map has both signs, so a missing ReLU would change the normalized map."""
    return any(m.min() < 0 < m.max() for m in cam_before_relu)


@pytest.mark.parametrize("requested", [None, 1])
def test_every_cam_method_matches_its_numpy_formula(reference_model, requested):
    path, reference, layer = reference_model
    images = np.random.default_rng(5).normal(size=(6, 8, 8, 3)).astype(np.float32)
    explained = None if requested is None else [requested] * 6
    activations, _, classes, gradients = forward_and_gradients(images, reference, explained)
    assert len(np.unique(classes)) > 1 or requested is not None
    if not reference.relu:
        assert activations.min() < 0 < activations.max()
        assert _signed_somewhere(np.einsum("nijk,nk->nij", activations, gradients.mean(axis=(1, 2))))
    run = _explainer(path, methods=tuple(CAM_METHODS))
    assert run.layer.path == layer
    result = run.explainer.explain(images, BEST if requested is None else GivenClass(requested))
    np.testing.assert_array_equal(result.classes, classes)
    for method in CAM_METHODS:
        expected = cam_maps(method, activations, gradients)
        np.testing.assert_allclose(result.maps[method], expected, atol=1e-4, err_msg=method)


@pytest.mark.parametrize("max_channels", [None, 2])
def test_scorecam_matches_numpy(reference_model, max_channels):
    path, reference, _ = reference_model
    images = np.random.default_rng(6).normal(size=(3, 8, 8, 3)).astype(np.float32)
    run = _explainer(path, methods=("scorecam",), batch_size=2, scorecam_max_channels=max_channels)
    results = [run.explainer.explain(images[s], BEST) for s in (slice(0, 2), slice(2, 3))]
    classes = np.concatenate([r.classes for r in results])
    maps = np.concatenate([r.maps["scorecam"] for r in results])
    np.testing.assert_allclose(maps, scorecam_maps(images, reference, classes, max_channels), atol=1e-4)


def test_scorecam_weighs_channels_by_probability_and_applies_the_relu(reference_model):
    """On the signed layer, the paper's map differs from the two departures it once had (logits
    as channel scores; no ReLU), so the comparison above can see either."""
    path, reference, _ = reference_model
    if reference.relu:
        pytest.skip("after a ReLU both departures vanish; the signed layers show them")
    images = np.random.default_rng(6).normal(size=(3, 8, 8, 3)).astype(np.float32)
    classes = forward_and_gradients(images, reference)[2]
    paper = scorecam_maps(images, reference, classes)
    assert np.abs(paper - scorecam_maps(images, reference, classes, score="logit")).max() > 1e-2
    assert np.abs(paper - scorecam_maps(images, reference, classes, relu=False)).max() > 1e-2


@pytest.mark.parametrize("channel_weights", [[1.0, 1.0, 1.0], [-3.0, 2.0, 2.0], [1.0, 1.0, -1.5]])
def test_eigencam_sign_makes_the_active_region_positive(channel_weights):
    """The blob raises the channel sum, so the map must peak there. With a dominant negative
    channel, the raw singular vector (largest entry made positive) would invert the map."""
    import tensorflow as tf

    blob = np.zeros((6, 6))
    blob[2, 3] = 1.0
    noise = np.random.default_rng(0).uniform(0, 0.05, size=(6, 6, 3))
    activations = blob[:, :, None] * np.array(channel_weights) + noise
    result = eigencam(tf.constant(activations[None], tf.float32), tf.zeros((1, 6, 6, 3))).numpy()[0]
    assert np.unravel_index(np.argmax(result), result.shape) == (2, 3)


def test_gradcam_plus_plus_weights_by_hand():
    import tensorflow as tf

    activations = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 2, 2, 1)
    gradients = np.array([[1.0, -1.0], [2.0, 0.0]], np.float32).reshape(1, 2, 2, 1)
    # sum A = 10; denominators 2g^2 + 10g^3 = (12, -8, 88, 0); alphas (1/12, -1/8, 4/88, 0);
    # w = 1/12 * ReLU(1) + 4/88 * ReLU(2) = 0.174242...; map = w * A
    weight = 1 / 12 + 8 / 88
    result = gradcam_plus_plus(tf.constant(activations), tf.constant(gradients)).numpy()
    np.testing.assert_allclose(result[0], weight * activations[0, :, :, 0], rtol=1e-6)


def test_gradcam_plus_plus_does_not_overflow_for_large_logits(gap_model):
    image = np.full((1, 4, 4, 1), 500.0, np.float32)  # logits far above float32's exp range (~88)
    image[0, 0, 3, 0] = 900.0
    result = _explainer(gap_model, methods=("gradcam++",)).explainer.explain(image, GivenClass(0))
    assert np.all(np.isfinite(result.maps["gradcam++"]))
    assert np.unravel_index(np.argmax(result.maps["gradcam++"][0]), (4, 4)) == (0, 3)


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
    maps = [_explainer(tmp_path / name).explainer.explain(images, GivenClass(0)).maps["gradcam"]
            for name in ("full.keras", "half.keras")]
    assert maps[1].max() == 1.0
    np.testing.assert_allclose(maps[1], maps[0], atol=2e-2)


def test_layer_that_does_not_feed_the_explained_output_is_an_error(tmp_path):
    import keras
    from keras import layers

    from xaicli._errors import LayerError

    inputs = keras.Input((8, 8, 3))
    main = layers.Dense(2, name="main")(layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv_main")(inputs)))
    side = layers.Dense(2, name="side")(layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv_side")(inputs)))
    keras.Model(inputs, [main, side]).save(tmp_path / "two_heads.keras")
    run = _explainer(tmp_path / "two_heads.keras", layer="conv_side")
    with pytest.raises(LayerError, match="'conv_side' does not feed the model's output"):
        run.explainer.explain(np.zeros((1, 8, 8, 3), np.float32), BEST)
