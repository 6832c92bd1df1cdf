"""Vision Transformers as users have them: keras-hub ViT and DeiT classifiers, whose attention
layers live inside subclassed encoder blocks. Built from a config (no weights), saved and
reloaded; rollout and gradient-weighted rollout against numpy, from attention weights read
independently (each block's attention layer called with return_attention_scores=True)."""

from __future__ import annotations

import numpy as np
import pytest

from xaicli._explain.targets import BEST
from xaicli._runs.config import RunConfig
from xaicli._runs.decisions import prepare

from ..explain.test_attention import numpy_gradient_rollout, numpy_rollout

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is in the test extra (Python 3.11+)")

HEIGHT, WIDTH, PATCH = 32, 48, 8  # a 4 x 6 grid: rows and columns must not be swapped
IMAGES = np.random.default_rng(8).normal(size=(3, HEIGHT, WIDTH, 3)).astype(np.float32)


def _saved_classifier(folder, backbone_class, classifier_class, seed, **dims):
    """A keras-hub classifier on a tiny backbone (2 blocks, 2 heads, 8 dims), saved and reloaded
    by the tests from its file."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone = backbone_class(image_shape=(HEIGHT, WIDTH, 3), patch_size=PATCH, num_layers=2, num_heads=2,
                              hidden_dim=8, **dims)
    classifier = classifier_class(backbone=backbone, num_classes=3)
    path = folder / "classifier.keras"
    classifier.save(path)
    return classifier, path


@pytest.fixture(scope="module")
def hub_vit(tmp_path_factory):
    return _saved_classifier(tmp_path_factory.mktemp("hub_vit"), keras_hub.models.ViTBackbone,
                             keras_hub.models.ViTImageClassifier, 9, mlp_dim=16)


@pytest.fixture(scope="module")
def hub_deit(tmp_path_factory):
    return _saved_classifier(tmp_path_factory.mktemp("hub_deit"), keras_hub.models.DeiTBackbone,
                             keras_hub.models.DeiTImageClassifier, 10, intermediate_dim=16)


def _explain(path, methods, **options):
    run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "out", methods=methods,
                            preprocess="none", **options))
    return run, run.explainer.explain(IMAGES, BEST)


def _vit_by_hand(classifier):
    """The keras-hub ViT's encoder blocks run step by step, each block's attention layer asked
    for its weights: (weights per block, d top logit / d weights per block)."""
    import tensorflow as tf

    backbone = classifier.backbone
    encoder = backbone.get_layer("vit_encoder")
    with tf.GradientTape() as tape:
        x = backbone.get_layer("vit_patching_and_embedding")(tf.constant(IMAGES))
        weights = []
        for block in encoder.encoder_layers:
            normed = block.layer_norm_1(x)
            attended, block_weights = block.mha(normed, normed, return_attention_scores=True)
            weights.append(block_weights)
            x = x + attended
            x = x + block.mlp(block.layer_norm_2(x))
        logits = classifier.get_layer("predictions")(encoder.layer_norm(x)[:, 0])
        top = tf.gather(logits, tf.argmax(logits, axis=1), batch_dims=1)
    gradients = tape.gradient(top, weights)
    return [w.numpy().astype(np.float64) for w in weights], [g.numpy().astype(np.float64) for g in gradients]


def test_keras_hub_vit_attention_at_depth_grid_and_layers(hub_vit):
    run, result = _explain(hub_vit[1], ("attention", "grad-rollout", "gradcam"))
    info = run.info
    backbone = hub_vit[0].backbone.name
    assert info.attention_layers == tuple(f"{backbone}/vit_encoder/transformer_block_{i}/mha" for i in (1, 2))
    assert (info.token_grid, info.extra_tokens) == ((4, 6), 1)
    # the last block's input, where the patch tokens still reach the class token; not the patch embedding
    assert run.layer.path == f"{backbone}/vit_encoder/transformer_block_2/ln_1"
    weights, gradients = _vit_by_hand(hub_vit[0])
    np.testing.assert_allclose(result.maps["attention"], numpy_rollout(weights, (4, 6), True), atol=1e-5)
    np.testing.assert_allclose(result.maps["grad-rollout"],
                               numpy_gradient_rollout(weights, gradients, (4, 6), True), atol=1e-4)


def test_keras_hub_vit_inner_block_by_path(hub_vit):
    block = f"{hub_vit[0].backbone.name}/vit_encoder/transformer_block_1"
    run, result = _explain(hub_vit[1], ("gradcam",), layer=block)
    assert run.layer.path == block and result.maps["gradcam"].shape == (3, 4, 6)


def test_keras_hub_deit_has_two_extra_tokens(hub_deit):
    import tensorflow as tf

    classifier, path = hub_deit
    run, result = _explain(path, ("attention", "grad-rollout"))
    assert (run.info.token_grid, run.info.extra_tokens) == ((4, 6), 2)
    backbone = classifier.backbone
    encoder = backbone.get_layer("deit_encoder")
    with tf.GradientTape() as tape:
        x, weights = backbone.get_layer("deit_patching_and_embedding")(tf.constant(IMAGES)), []
        for block in encoder.encoder_layers:  # DeiT's blocks return their attention weights when asked
            x, block_weights = block(x, return_attention_scores=True)
            weights.append(block_weights)
        logits = classifier.output_dense(encoder.layer_norm(x)[:, 0])
        top = tf.gather(logits, tf.argmax(logits, axis=1), batch_dims=1)
    gradients = [g.numpy().astype(np.float64) for g in tape.gradient(top, weights)]
    weights = [w.numpy().astype(np.float64) for w in weights]
    np.testing.assert_allclose(result.maps["attention"], numpy_rollout(weights, (4, 6), True, extra=2), atol=1e-5)
    np.testing.assert_allclose(result.maps["grad-rollout"],
                               numpy_gradient_rollout(weights, gradients, (4, 6), True, extra=2), atol=1e-4)


def test_attention_maps_do_not_depend_on_the_batch(hub_vit):
    path = hub_vit[1]
    maps = []
    for batch_size in (1, 3):
        run = prepare(RunConfig(model=path, inputs=(path,), out_dir=path.parent / "o", batch_size=batch_size,
                                methods=("attention", "grad-rollout"), preprocess="none"))
        maps.append({name: np.concatenate([run.explainer.explain(IMAGES[i:i + batch_size],
                                                                 BEST).maps[name]
                                           for i in range(0, 3, batch_size)]) for name in ("attention", "grad-rollout")})
    for name in maps[0]:
        np.testing.assert_allclose(maps[0][name], maps[1][name], atol=1e-5)


@pytest.fixture(scope="module")
def vit_keras_models(tmp_path_factory):
    """vit_keras's ViT (its own attention layer returns its weights), flat and nested in an outer
    model, as .keras and .h5."""
    vit = pytest.importorskip("vit_keras.vit", reason="vit-keras is in the test extra")
    import keras

    keras.utils.set_random_seed(12)
    model = vit.build_model(image_size=(HEIGHT, WIDTH), patch_size=PATCH, num_layers=2, hidden_size=8, num_heads=2,
                            name="vit-tiny", mlp_dim=16, classes=3, activation="softmax")
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    nested = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="outer_head")(model(inputs)))
    folder = tmp_path_factory.mktemp("vit_keras")
    paths = {}
    for name, built in (("flat", model), ("nested", nested)):
        for suffix in ("keras", "h5"):
            paths[name, suffix] = folder / f"{name}.{suffix}"
            built.save(paths[name, suffix])
    return model, nested, paths


def _vit_keras_by_hand(vit_model, head):
    """vit_keras's blocks called one by one; each returns its attention weights beside its
    output. ``head`` maps the class token to logits. (weights, d top logit / d weights)."""
    import keras
    import tensorflow as tf

    layer = vit_model.get_layer
    reshape = next(l for l in vit_model.layers if isinstance(l, keras.layers.Reshape))  # named by a counter
    with tf.GradientTape() as tape:
        x = layer("embedding")(tf.constant(IMAGES))
        x = layer("Transformer_posembed_input")(layer("class_token")(reshape(x)))
        weights = []
        for block in (0, 1):
            x, block_weights = layer(f"Transformer_encoderblock_{block}")(x)
            weights.append(block_weights)
        logits = head(layer("Transformer_encoder_norm")(x)[:, 0])
        top = tf.gather(logits, tf.argmax(logits, axis=1), batch_dims=1)
    gradients = tape.gradient(top, weights)
    return [w.numpy().astype(np.float64) for w in weights], [g.numpy().astype(np.float64) for g in gradients]


@pytest.mark.parametrize("shape", ["flat", "nested"])
@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_vit_keras_models_roll_out_like_numpy(vit_keras_models, shape, suffix):
    import keras

    model, nested, paths = vit_keras_models
    run, result = _explain(paths[shape, suffix], ("attention", "grad-rollout", "gradcam"),
                           custom_objects="vit_keras.layers", unsafe=True)
    prefix = "vit-tiny/" if shape == "nested" else ""
    assert run.info.attention_layers == tuple(f"{prefix}Transformer_encoderblock_{i}/MultiHeadDotProductAttention_1"
                                              for i in (0, 1))
    assert (run.info.token_grid, run.info.extra_tokens) == ((4, 6), 1)
    assert run.layer.path == f"{prefix}Transformer_encoderblock_1/LayerNorm_0"  # not the patch embedding
    inner_head = model.get_layer("head")

    def head(token):
        logits = keras.ops.matmul(token, inner_head.kernel) + inner_head.bias  # before the softmax
        if shape == "flat":
            return logits
        outer = nested.get_layer("outer_head")
        return keras.ops.matmul(keras.ops.softmax(logits), outer.kernel) + outer.bias

    weights, gradients = _vit_keras_by_hand(model, head)
    np.testing.assert_allclose(result.maps["attention"], numpy_rollout(weights, (4, 6), True), atol=1e-5)
    np.testing.assert_allclose(result.maps["grad-rollout"],
                               numpy_gradient_rollout(weights, gradients, (4, 6), True), atol=1e-4)


def test_vit_keras_needs_its_module_and_unsafe_and_says_so(vit_keras_models):
    """In a fresh process, where nothing has imported vit_keras yet."""
    import subprocess
    import sys

    path = str(vit_keras_models[2]["flat", "keras"])
    steps = [([], "'ClassToken' from module vit_keras.layers: pass --custom-objects vit_keras.layers"),
             (["--custom-objects", "vit_keras.layers"], "Lambda layer holding Python code"),
             (["--custom-objects", "vit_keras.layers", "--unsafe"], "")]
    for options, message in steps:
        result = subprocess.run([sys.executable, "-m", "xaicli", "info", path, *options], capture_output=True, text=True)
        assert result.returncode == (2 if message else 0), result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == (1 if message else 0)


def test_keras_hub_dinov2_backbone_under_a_head_with_register_tokens(tmp_path):
    """DINOv2 takes its image as {"images": ...} and has a class token and register tokens."""
    import keras

    keras.utils.set_random_seed(13)
    backbone = keras_hub.models.DINOV2Backbone(patch_size=PATCH, num_layers=2, hidden_dim=8, num_heads=2,
                                               intermediate_dim=16, num_register_tokens=4, image_shape=(32, 32, 3),
                                               position_embedding_shape=(64, 64, 3))
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling1D()(backbone(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled)).save(tmp_path / "dino.keras")
    run = prepare(RunConfig(model=tmp_path / "dino.keras", inputs=(tmp_path,), out_dir=tmp_path / "out",
                            methods=("attention", "grad-rollout", "gradcam"), preprocess="none"))
    assert (run.info.token_grid, run.info.extra_tokens) == ((4, 4), 5)
    assert len(run.info.attention_layers) == 2 and run.layer.path.endswith("layers_1/norm1")
    maps = run.explainer.explain(IMAGES[:, :32, :32], BEST).maps
    assert all(m.shape == (3, 4, 4) and np.isfinite(m).all() for m in maps.values())
