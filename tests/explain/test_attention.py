"""Attention rollout on Vision Transformers, and Grad-CAM on their token layers."""

import csv

import numpy as np
import pytest

from xaicli._errors import UsageError
from xaicli._explain.targets import BEST, GivenClass
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..conftest import build_vit

IMAGES = np.random.default_rng(31).uniform(0, 1, size=(4, 12, 16, 3)).astype(np.float32)


def _run(path, method="attention", **options):
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", methods=(method,),
                            preprocess="none", **options))
    return run, run.explainer.explain(IMAGES, BEST)


def eager_forward(model, images, class_token=True, blocks=2, tensors=False):
    """The tiny ViT run layer by layer in eager mode, asking each attention layer for its
    scores directly: an independent capture. Returns (scores per block, final tokens); the
    scores as tensors on the current tape with ``tensors``, else as numpy arrays."""
    import tensorflow as tf

    layer = model.get_layer
    x = layer("tokens")(layer("patch_embed")(tf.constant(images)))
    if class_token:
        x = tf.concat([layer("cls")(tf.reduce_mean(x, axis=1, keepdims=True)), x], axis=1)
    scores = []
    for block in range(blocks):
        h = layer(f"norm_a{block}")(x)
        attended, block_scores = layer(f"mha_{block}")(h, h, return_attention_scores=True)
        scores.append(block_scores if tensors else block_scores.numpy())
        x = x + attended
        x = x + layer(f"mlp_{block}")(layer(f"norm_b{block}")(x))
    return scores, layer("final_norm")(x)


def numpy_rollout(scores, grid, class_token, fusion="mean", discard=0.0, extra=1):
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    maps = []
    for image in range(len(scores[0])):
        tokens = scores[0].shape[-1]
        rollout = np.eye(tokens)
        for block in scores:
            a = fuse(block[image].astype(np.float64), axis=0)
            if discard:
                a = np.where(a < np.sort(a.ravel())[int(discard * (a.size - 1))], 0.0, a)
            a = a + np.eye(tokens)
            rollout = (a / a.sum(axis=1, keepdims=True)) @ rollout
        row = rollout[0, extra:] if class_token else rollout.mean(axis=0)
        row = row.reshape(grid)
        maps.append((row - row.min()) / (row.max() - row.min()))
    return np.stack(maps)


@pytest.mark.parametrize("class_token", [True, False])
@pytest.mark.parametrize("fusion,discard", [("mean", 0.0), ("max", 0.0), ("min", 0.3)])
def test_rollout_matches_numpy_from_independently_captured_scores(tmp_path, class_token, fusion, discard):
    model = build_vit(class_token=class_token, seed=1)
    model.save(tmp_path / "vit.keras")
    run, result = _run(tmp_path / "vit.keras", head_fusion=fusion, discard_ratio=discard)
    assert run.info.token_grid == (3, 4) and run.info.extra_tokens == (1 if class_token else 0)
    scores, _ = eager_forward(model, IMAGES, class_token)
    expected = numpy_rollout(scores, (3, 4), class_token, fusion, discard)
    np.testing.assert_allclose(result.maps["attention"], expected, atol=1e-5)


def numpy_gradient_rollout(scores, gradients, grid, class_token, extra=1):
    """Chefer et al. 2021 for self-attention: R = I; per block R += mean_h ReLU(dA * A) @ R."""
    maps = []
    for image in range(len(scores[0])):
        rollout = np.eye(scores[0].shape[-1])
        for block_scores, block_gradients in zip(scores, gradients):
            relevance = np.maximum(block_gradients[image] * block_scores[image], 0).mean(axis=0)
            rollout = rollout + relevance @ rollout
        row = (rollout[0, extra:] if class_token else rollout.mean(axis=0)).reshape(grid)
        maps.append((row - row.min()) / (row.max() - row.min()))
    return np.stack(maps)


@pytest.mark.parametrize("class_token", [True, False])
def test_gradient_rollout_matches_numpy_with_independently_taken_gradients(tmp_path, class_token):
    import tensorflow as tf

    model = build_vit(class_token=class_token, seed=5)
    model.save(tmp_path / "vit.keras")
    run, result = _run(tmp_path / "vit.keras", "grad-rollout")
    head = model.get_layer("head")
    with tf.GradientTape() as tape:
        scores, tokens = eager_forward(model, IMAGES, class_token, tensors=True)
        pooled = tokens[:, 0] if class_token else tf.reduce_mean(tokens, axis=1)
        logits = tf.matmul(pooled, head.kernel) + head.bias
        chosen = tf.gather(logits, tf.argmax(logits, axis=1), batch_dims=1)
    gradients = [g.numpy().astype(np.float64) for g in tape.gradient(chosen, scores)]
    expected = numpy_gradient_rollout([s.numpy().astype(np.float64) for s in scores], gradients, (3, 4), class_token)
    np.testing.assert_allclose(result.maps["grad-rollout"], expected, atol=1e-4)


def test_gradient_rollout_depends_on_the_class_and_plain_rollout_does_not(tmp_path):
    build_vit(seed=6).save(tmp_path / "vit.keras")
    run = prepare(RunConfig(model=tmp_path / "vit.keras", inputs=(tmp_path,), out_dir=tmp_path / "out",
                            methods=("attention", "grad-rollout"), preprocess="none"))
    by_class = [run.explainer.explain(IMAGES, GivenClass(c)).maps for c in (0, 1)]
    np.testing.assert_array_equal(by_class[0]["attention"], by_class[1]["attention"])
    assert not np.allclose(by_class[0]["grad-rollout"], by_class[1]["grad-rollout"], atol=1e-3)


def _rigged_vit(tmp_path):
    """Post-norm ViT whose every query attends to the brightest patch: the patch embedding's
    channel 0 is the patch's mean brightness, queries are a constant, keys are the brightness."""
    model = build_vit(pre_norm=False, seed=2)
    embed = model.get_layer("patch_embed")
    kernel = np.zeros_like(embed.get_weights()[0])
    kernel[..., 0] = 1.0 / (4 * 4 * 3)
    embed.set_weights([kernel, np.zeros_like(embed.get_weights()[1])])
    cls = model.get_layer("cls")
    cls.set_weights([np.zeros_like(w) for w in cls.get_weights()])  # class token brightness 0
    for block in range(2):
        attention = model.get_layer(f"mha_{block}")
        weights = [np.zeros_like(w) for w in attention.get_weights()]
        # weights: query kernel, query bias, key kernel, key bias, value kernel, value bias, out kernel, out bias
        weights[1][:, 0] = 40.0  # query = constant
        weights[2][0, :, 0] = 40.0  # key = 40 x brightness (channel 0)
        attention.set_weights(weights)
    model.save(tmp_path / "rigged.keras")
    return tmp_path / "rigged.keras"


def test_rigged_attention_peaks_at_each_images_own_patch(tmp_path):
    path = _rigged_vit(tmp_path)
    images = np.zeros((2, 12, 16, 3), np.float32)
    images[0, 8:12, 4:8] = 1.0  # grid cell (row 2, column 1): tests rows vs columns on a 3x4 grid
    images[1, 0:4, 12:16] = 1.0  # grid cell (row 0, column 3)
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=tmp_path / "o", methods=("attention",), preprocess="none"))
    maps = run.explainer.explain(images, BEST).maps["attention"]
    assert maps.shape == (2, 3, 4)
    assert np.unravel_index(np.argmax(maps[0]), (3, 4)) == (2, 1)
    assert np.unravel_index(np.argmax(maps[1]), (3, 4)) == (0, 3)


def test_gradcam_on_a_token_layer_uses_the_patch_grid(tmp_path):
    import tensorflow as tf

    model = build_vit(seed=4)
    model.save(tmp_path / "vit.keras")
    assert _run(tmp_path / "vit.keras", "gradcam")[0].layer.path == "norm_a1"  # auto: the last block's input
    run, result = _run(tmp_path / "vit.keras", "gradcam", layer="final_norm")
    images = tf.constant(IMAGES)
    with tf.GradientTape() as tape:
        _, tokens = eager_forward(model, IMAGES)
        tape.watch(tokens)
        logits = tf.matmul(tokens[:, 0], model.get_layer("head").kernel) + model.get_layer("head").bias
        chosen = tf.gather(logits, result.classes, batch_dims=1)
    gradients = tape.gradient(chosen, tokens).numpy()[:, 1:].reshape(4, 3, 4, 8)
    activations = tokens.numpy()[:, 1:].reshape(4, 3, 4, 8)
    cams = np.maximum((activations * gradients.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    low, high = cams.min(axis=(1, 2), keepdims=True), cams.max(axis=(1, 2), keepdims=True)
    expected = np.where(high > low, (cams - low) / np.where(high > low, high - low, 1), 0)
    np.testing.assert_allclose(result.maps["gradcam"], expected, atol=1e-4)
    del images


def test_attention_on_a_cnn_names_the_methods_that_fit(tiny_model):
    with pytest.raises(UsageError, match="needs a Vision Transformer.*methods that fit it: gradcam, gradcam\\+\\+"):
        _run(tiny_model)


def test_vit_run_writes_rows_for_attention_and_token_cams(tmp_path, image_folder):
    from click.testing import CliRunner

    from xaicli.cli import main

    build_vit().save(tmp_path / "vit.keras")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "vit.keras"), str(image_folder / "a.png"), "-o", str(out),
                                       "--method", "attention,gradcam", "-q"])
    assert result.exit_code == 0, result.output
    with open(out / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["method"], r["layer"]) for r in rows] == [("attention", "mha_0..mha_1"), ("gradcam", "norm_a1")]
    assert (out / "a.png.attention.png").exists()


def test_attention_over_changing_token_sets_is_refused_in_one_line(tmp_path):
    """Hierarchical attention (Swin merges patches between stages): the blocks weigh different
    token sets, so a rollout through them would be wrong. CAM methods still run."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    x = layers.Reshape((16, 8))(layers.Conv2D(8, 4, strides=4, name="patch_embed")(inputs))
    x = x + layers.MultiHeadAttention(2, 4, name="stage1")(x, x)
    x = layers.Reshape((4, 32))(x)  # patch merging: 16 tokens become 4
    x = x + layers.MultiHeadAttention(2, 4, name="stage2")(x, x)
    keras.Model(inputs, layers.Dense(2)(layers.GlobalAveragePooling1D()(x))).save(tmp_path / "hier.keras")
    with pytest.raises(UsageError, match=r"--method attention,grad-rollout cannot place this model's attention on "
                                         r"the image: its attention layers do not all weigh the same tokens.*Swin"):
        prepare(RunConfig(model=tmp_path / "hier.keras", inputs=(tmp_path,), out_dir=tmp_path / "o",
                          methods=("attention", "grad-rollout")))
    run = prepare(RunConfig(model=tmp_path / "hier.keras", inputs=(tmp_path,), out_dir=tmp_path / "o",
                            methods=("gradcam",)))
    assert run.layer.path == "patch_embed"
