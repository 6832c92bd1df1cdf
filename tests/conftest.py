"""Shared fixtures. TensorFlow is imported only by the fixtures that build models, so the
numpy-only test modules run without it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SIZE = 16  # tiny models take 16x16 RGB inputs


def matches_golden(name: str, text: str) -> None:
    """``text`` equals the golden file ``tests/golden/<name>``; with XAI_UPDATE_GOLDEN=1 it is
    written there first (after an intended format change: review the diff)."""
    path = REPO / "tests" / "golden" / name
    if os.environ.get("XAI_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8", newline="")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def xai(*args, **invoke):
    """``xai ARGS`` run in this process by click's runner (``invoke``: its options, e.g. ``input``):
    the result has ``exit_code``, ``output`` and ``stderr``. Every command goes through the API, so
    a test of the command tests it too."""
    from click.testing import CliRunner

    from xaicli.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], **invoke)


def _variant_builders():
    """Models that compute the same function with the same weights, in every shape users have."""
    import keras
    from keras import layers

    def trunk(x):
        x = layers.Conv2D(4, 3, activation="relu", name="conv_a")(x)
        return layers.Conv2D(6, 3, activation="relu", name="conv_b")(x)

    def functional(head):
        inputs = keras.Input((SIZE, SIZE, 3))
        x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
        x = layers.GlobalAveragePooling2D(name="gap")(trunk(x))
        return keras.Model(inputs, head(x))

    def dense_softmax(x):
        return layers.Dense(3, activation="softmax", name="head")(x)

    def separate_activation(x):
        return layers.Activation("softmax", name="probs")(layers.Dense(3, name="head")(x))

    def softmax_layer(x):
        return layers.Softmax(name="probs")(layers.Dense(3, name="head")(x))

    def linear(x):
        return layers.Dense(3, name="head")(x)

    def sequential():
        return keras.Sequential([
            keras.Input((SIZE, SIZE, 3)),
            layers.Rescaling(1 / 255.0, name="rescale"),
            layers.Conv2D(4, 3, activation="relu", name="conv_a"),
            layers.Conv2D(6, 3, activation="relu", name="conv_b"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, activation="softmax", name="head"),
        ])

    def nested():
        base_in = keras.Input((SIZE, SIZE, 3))
        base = keras.Model(base_in, trunk(base_in), name="base")
        inputs = keras.Input((SIZE, SIZE, 3))
        x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
        x = layers.GlobalAveragePooling2D(name="gap")(base(x))
        return keras.Model(inputs, dense_softmax(x))

    return {
        "functional": lambda: functional(dense_softmax),
        "activation_layer": lambda: functional(separate_activation),
        "softmax_layer": lambda: functional(softmax_layer),
        "linear_head": lambda: functional(linear),
        "sequential": sequential,
        "nested": nested,
    }


def _copy_weights(source, target) -> None:
    """Copy weights between models by layer name, looking inside nested models."""
    def by_name(model):
        found = {}
        for layer in model.layers:
            if hasattr(layer, "layers"):
                found.update(by_name(layer))
            elif layer.weights:
                found[layer.name] = layer
        return found

    sources = by_name(source)
    for name, layer in by_name(target).items():
        layer.set_weights(sources[name].get_weights())


@pytest.fixture(scope="session")
def variant_models(tmp_path_factory) -> dict[str, Path]:
    """name.format -> path of a saved tiny model; every variant has the same weights."""
    import keras

    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("variants")
    builders = _variant_builders()
    reference = builders["functional"]()
    paths = {}
    for name, build in builders.items():
        model = build()
        _copy_weights(reference, model)
        for suffix in ("keras", "h5"):
            path = folder / f"{name}.{suffix}"
            model.save(path)
            paths[f"{name}.{suffix}"] = path
    return paths


@pytest.fixture(scope="session")
def tiny_model(variant_models) -> Path:
    return variant_models["functional.keras"]


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    """Three decodable images of different sizes and modes, one in a subfolder, and one bad file."""
    from PIL import Image

    rng = np.random.default_rng(3)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (50, 20), dtype=np.uint8), mode="L").save(folder / "sub" / "b.JPG")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="RGBA").save(folder / "c.webp")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


def build_vit(height=12, width=16, patch=4, dim=8, heads=2, blocks=2, class_token=True, classes=3,
              pre_norm=True, seed=0):
    """A tiny Vision Transformer from built-in layers only: a patch-embedding convolution, an
    optional class token (a learned constant made by a zero-kernel Dense), attention blocks
    (pre-norm, or post-norm as in the original Transformer), and a classifier on the class
    token or on the mean token. The grid is (height/patch) x (width/patch)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    rows, columns = height // patch, width // patch
    inputs = keras.Input((height, width, 3))
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(inputs)
    x = layers.Reshape((rows * columns, dim), name="tokens")(x)
    if class_token:
        constant = layers.Dense(dim, kernel_initializer="zeros", bias_initializer="random_normal", name="cls")(
            layers.GlobalAveragePooling1D(keepdims=True, name="cls_source")(x))
        x = layers.Concatenate(axis=1, name="with_cls")([constant, x])
    for block in range(blocks):
        attend = layers.MultiHeadAttention(heads, dim // heads, name=f"mha_{block}")
        if pre_norm:
            h = layers.LayerNormalization(name=f"norm_a{block}")(x)
            x = layers.Add()([x, attend(h, h)])
            h = layers.LayerNormalization(name=f"norm_b{block}")(x)
            x = layers.Add()([x, layers.Dense(dim, activation="gelu", name=f"mlp_{block}")(h)])
        else:
            x = layers.LayerNormalization(name=f"norm_a{block}")(layers.Add()([x, attend(x, x)]))
            h = layers.Dense(dim, activation="gelu", name=f"mlp_{block}")(x)
            x = layers.LayerNormalization(name=f"norm_b{block}")(layers.Add()([x, h]))
    x = layers.LayerNormalization(name="final_norm")(x)
    pooled = layers.Flatten()(layers.Cropping1D((0, rows * columns))(x)) if class_token else layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax", name="head")(pooled))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vit") / "vit.keras"
    build_vit().save(path)
    return path


def model_for(method: str, cnn: Path, vit: Path) -> Path:
    """A tiny model the method fits: a ViT for attention methods, the CNN otherwise."""
    from xaicli._explain.registry import REGISTRY

    return vit if REGISTRY[method].family == "attention" else cnn


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright. Skipped without them, except under
    CI=true, where their absence fails: CI always installs them (.ci/run)."""
    import shutil

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if sync_playwright is None or chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have Chromium and Playwright (see .ci/run)")
        pytest.skip("no Chromium or Playwright here")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def wait_until(page, condition: str, seconds: float = 20.0) -> None:
    """Poll the JavaScript ``condition`` from outside the page: Playwright's wait_for_function
    evaluates its text with eval, which the report's Content Security Policy rightly refuses."""
    for _ in range(int(seconds / 0.05)):
        if page.evaluate(condition):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"the page never met {condition}")

