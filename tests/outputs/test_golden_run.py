"""The files a run leaves, checked against golden files in tests/golden/.

Set XAI_UPDATE_GOLDEN=1 to rewrite the golden files after an intended format change, then
review the diff."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from xaicli.cli import main

from ..conftest import REPO, matches_golden

@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    """Logits = 2 x the mean of each RGB channel on the 0..1 scale, through a 1x1 identity
    convolution named 'conv' and an identity dense layer, then softmax: every number in the
    table follows by hand from the images' colours."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="head")(x))
    model.get_layer("conv").set_weights([np.eye(3, dtype=np.float32)[None, None]])
    model.get_layer("head").set_weights([2 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    path = tmp_path_factory.mktemp("colour") / "colour.keras"
    model.save(path)
    return path


COLOURS = {"red.png": (255, 0, 0), "teal.png": (0, 255, 51)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


@pytest.mark.parametrize("table_format", ["csv", "jsonl"])
def test_run_outputs_match_golden(colour_model, tmp_path, monkeypatch, table_format):
    """The predictions table and run.json of a whole run, with relative paths so the files
    are the same on every machine; only versions, the model's hash and timing are masked."""
    monkeypatch.chdir(tmp_path)
    Path("images").mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (12, 10), colour).save(Path("images", name))
    Path("images", "notes.png").write_text("a text file with an image's name")
    Path("labels.json").write_text(json.dumps(["red", "green", "blue"]))
    model = Path("model.keras")
    model.write_bytes(colour_model.read_bytes())
    result = CliRunner().invoke(main, [
        "run", str(model), "images", "-o", "out", "--labels", "labels.json", "--top-k", "2",
        "--format", table_format, "--workers", "2", "-q"])
    assert result.exit_code == 1, result.output  # the text file fails; the others are explained
    matches_golden(f"run.{table_format}", Path("out", f"predictions.{table_format}").read_text(encoding="utf-8"))
    manifest = json.loads(Path("out", "run.json").read_text())
    assert manifest.pop("seconds") >= 0
    manifest.update(tensorflow="<version>", keras="<version>", tool={**manifest["tool"], "version": "<version>"})
    manifest["model"]["sha256"] = "<sha256>"
    assert manifest["status"] == "complete"
    matches_golden(f"run.{table_format}.manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_golden_run_numbers_follow_by_hand_from_the_colours():
    """The golden table is itself checked: logits 2 x channel means, softmax, six decimals."""
    import csv

    with open(REPO / "tests" / "golden" / "run.csv", newline="", encoding="utf-8") as stream:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(stream)}
    for name, colour in COLOURS.items():
        logits = 2 * np.array(colour) / 255.0
        probabilities = _softmax(logits)
        row = rows[name]
        assert int(row["pred_index"]) == int(np.argmax(logits))
        assert row["pred_prob"] == f"{probabilities.max():.6f}"
        assert row["class_score"] == f"{logits.max():.6f}"
        second = int(np.argsort(-logits)[1])
        assert (row["top2_index"], row["top2_prob"]) == (str(second), f"{probabilities[second]:.6f}")
