"""No model shape or broken file reaches the user as a Python traceback: every command on every
kind of model the suite knows ends in outputs (exit 0 or 1) or in one line (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from xaicli.cli import main

from ..conftest import build_vit


def _catalogue(folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (model path, extra options): working models, models that cannot be explained,
    and files that are not models at all."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    models: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def save(name: str, model, *options: str, suffix: str = ".keras") -> None:
        path = folder / f"{name}{suffix}"
        model.save(path)
        models[name] = (path, options)

    def trunk(x, prefix=""):
        return layers.Conv2D(3, 3, activation="relu", name=f"{prefix}conv")(x)

    def image(size=(8, 8, 3), **kwargs):
        return keras.Input(size, **kwargs)

    x = image()
    pooled = layers.GlobalAveragePooling2D()(trunk(x))
    save("two_heads", keras.Model(x, [layers.Dense(3, activation="softmax")(pooled),
                                      layers.Dense(4, activation="sigmoid")(pooled)]), suffix=".h5")
    x = image()
    features = trunk(x)
    save("features_then_classifier", keras.Model(x, [features, layers.Dense(2, activation="softmax")(
        layers.GlobalAveragePooling2D()(features))]))
    x = image()
    save("segmentation", keras.Model(x, layers.Conv2D(2, 1, activation="softmax")(trunk(x))))
    x = image()
    save("feature_map_only", keras.Model(x, trunk(x)))
    x = image()
    save("sequence_output", keras.Model(x, layers.Dense(3, activation="softmax")(layers.Reshape((36, 3))(trunk(x)))))
    x = image()
    save("binary_sigmoid", keras.Model(x, layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling2D()(trunk(x)))))
    x = image()
    save("no_convolution", keras.Model(x, layers.Dense(3, activation="softmax")(layers.Flatten()(x))))
    a, b = image(), image()
    save("two_inputs", keras.Model([a, b], layers.Dense(2)(layers.Concatenate()([layers.Flatten()(a), layers.Flatten()(b)]))))
    x = keras.Input((10,))
    save("vector_input", keras.Model(x, layers.Dense(2, activation="softmax")(x)))
    x = image((8, 8, 5))
    save("five_channels", keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(trunk(x)))))
    x = image((None, None, 3))
    any_size = keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(trunk(x))))
    save("any_size", any_size)
    save("any_size_given", any_size, "--input-size", "8x8")
    x = image(dtype="uint8")
    save("uint8_input", keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(trunk(layers.Rescaling(1 / 255)(x))))))
    x = image()
    save("lambda", keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(trunk(layers.Lambda(lambda t: t * 2)(x))))))
    save("sequential_in_sequential", keras.Sequential([
        image(), keras.Sequential([layers.Conv2D(3, 3, name="inner_conv")], name="inner"),
        layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax")]))
    save("vit", build_vit(height=8, width=8, patch=4, dim=4, blocks=1))
    save("vit_no_class_token", build_vit(height=8, width=8, patch=4, dim=4, blocks=1, class_token=False))
    x = image()
    exported = keras.Model(x, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(trunk(x))))
    exported.export(folder / "exported", verbose=False)
    models["exported_savedmodel"] = (folder / "exported", ())
    broken = {"empty.keras": b"", "text.h5": b"not a model\n", "noise.keras": bytes(range(256)) * 4,
              "model.txt": b"weights"}
    for name, data in broken.items():
        (folder / name).write_bytes(data)
        models[name] = (folder / name, ())
    (folder / "empty_folder").mkdir()
    models["empty_folder"] = (folder / "empty_folder", ())
    models["missing"] = (folder / "missing.keras", ())
    return models


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, variant_models):
    models = _catalogue(tmp_path_factory.mktemp("catalogue"))
    models.update({f"variant {name}": (path, ()) for name, path in variant_models.items()})
    return models


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / "a.png")
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    return folder


COMMANDS = {
    "info": lambda model, images, out: ["info", model],
    "layers": lambda model, images, out: ["layers", model],
    "run": lambda model, images, out: ["run", model, images, "-o", out, "-m", "gradcam,saliency", "-q"],
    "run attention": lambda model, images, out: ["run", model, images, "-o", out, "-m", "attention", "-q"],
}


def test_every_command_on_every_model_ends_in_outputs_or_one_line(catalogue, images, tmp_path):
    outcomes = {}
    for name, (model, options) in catalogue.items():
        for command, arguments in COMMANDS.items():
            out = tmp_path / f"{name}-{command}".replace(" ", "_")
            result = CliRunner().invoke(main, [str(a) for a in (*arguments(model, images, out), *options)])
            where = f"{command} on {name}: exit {result.exit_code}\n{result.output}"
            assert result.exception is None or isinstance(result.exception, SystemExit), where
            assert "Traceback" not in result.output and "internal error" not in result.output, where
            assert result.exit_code in (0, 1, 2), where
            if result.exit_code == 2:
                lines = result.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("xai: error: "), where
            outcomes[name, command] = result.exit_code
    # the suite's working models do work: exit 1 is the folder's one bad image
    for name in ("two_heads", "features_then_classifier", "binary_sigmoid", "any_size_given", "uint8_input",
                 "sequential_in_sequential", "vit", "variant functional.keras", "variant nested.h5",
                 "segmentation", "feature_map_only"):  # a per-pixel output is explained as a segmentation
        assert outcomes[name, "run"] == 1 and outcomes[name, "info"] == 0, name
    for name in ("vit", "vit_no_class_token"):
        assert outcomes[name, "run attention"] == 1, name
    for name in ("sequence_output", "two_inputs", "vector_input",
                 "five_channels", "any_size", "lambda", "empty.keras", "text.h5", "noise.keras", "model.txt",
                 "empty_folder", "missing"):
        assert outcomes[name, "run"] == 2 and outcomes[name, "info"] == 2, name
