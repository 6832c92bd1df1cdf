"""outputs.py and the files a run leaves, checked against golden files in tests/golden/.

Set XAI_UPDATE_GOLDEN=1 to rewrite the golden files after an intended format change, then
review the diff: the files are the specification of what pipelines downstream read.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner
from xaicli._outputs.naming import output_path
from xaicli._outputs.table import PredictionsWriter, Ranked, Row, top_columns
from xaicli.cli import main

GOLDEN = Path(__file__).parent / "golden"


def _matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("XAI_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8", newline="")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def _hand_rows() -> list[Row]:
    top = (Ranked(2, "lesion, malignant", 0.8765435), Ranked(0, "naevus", 0.1234565))
    ok = Row(input="scans/ü 1.png", status="ok", error="", note="animated image: explained its first frame of 3",
             pred_index=2, pred_label="lesion, malignant",
             pred_prob=0.8765435, class_index=0, class_label="naevus", class_prob=0.1234565, class_score=-1.5,
             method="gradcam", layer="base/conv5", output="out/scans/ü 1.png.gradcam.png", top=top)
    error = Row(input='odd "name".jpg', status="error", error="cannot decode image: broken data stream", note="",
                pred_index=None, pred_label="", pred_prob=None, class_index=None, class_label="", class_prob=None,
                class_score=None, method="gradcam", layer="base/conv5", output="")
    return [ok, error]


@pytest.mark.parametrize("table_format", ["csv", "jsonl"])
def test_table_formats_match_golden(table_format):
    stream = io.StringIO()
    PredictionsWriter(stream, table_format, top_k=2).write(_hand_rows())
    _matches_golden(f"hand.{table_format}", stream.getvalue())


def test_top_columns_follow_rank_then_field():
    assert top_columns(0) == ()
    assert top_columns(2) == ("top1_index", "top1_label", "top1_prob", "top2_index", "top2_label", "top2_prob")


def test_output_path_keeps_the_source_suffix_method_and_tag_inside_out(tmp_path):
    relative = PurePosixPath("sub/a.jpg")
    assert output_path(tmp_path, relative, "gradcam") == tmp_path / "sub" / "a.jpg.gradcam.png"
    assert output_path(tmp_path, relative, "gradcam++", "panel", "top2") == tmp_path / "sub" / "a.jpg.gradcam++.top2.panel.png"
    assert output_path(tmp_path, relative, "saliency", "raw") == tmp_path / "sub" / "a.jpg.saliency.npy"
    assert output_path(tmp_path, relative, "gradcam", image_format="jpeg") == tmp_path / "sub" / "a.jpg.gradcam.jpg"
    assert output_path(tmp_path, relative, "gradcam", "heatmap", image_format="webp") == (
        tmp_path / "sub" / "a.jpg.gradcam.heatmap.webp")
    assert output_path(tmp_path, relative, "gradcam", "raw", image_format="webp").suffix == ".npy"


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
    _matches_golden(f"run.{table_format}", Path("out", f"predictions.{table_format}").read_text(encoding="utf-8"))
    manifest = json.loads(Path("out", "run.json").read_text())
    assert manifest.pop("seconds") >= 0
    manifest.update(tensorflow="<version>", keras="<version>", tool={**manifest["tool"], "version": "<version>"})
    manifest["model"]["sha256"] = "<sha256>"
    assert manifest["status"] == "complete"
    _matches_golden(f"run.{table_format}.manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_golden_run_numbers_follow_by_hand_from_the_colours():
    """The golden table is itself checked: logits 2 x channel means, softmax, six decimals."""
    import csv

    with open(GOLDEN / "run.csv", newline="", encoding="utf-8") as stream:
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



@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (40, 33, 3), (1, 9), (12, 4)])
def test_png_encoder_round_trips_through_pillow(shape, tmp_path):
    from xaicli._outputs.writers import encode_png, write_image

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(decoded), pixels)
    if len(shape) == 3:
        write_image(tmp_path / "x.png", pixels)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), pixels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_a_drawing_written_strip_by_strip_is_the_whole_picture(channels, image_format, tmp_path):
    """Outputs are encoded as their strips are drawn (one IDAT chunk each for PNG); the file
    must hold the same picture as one written whole, with the Up filter carried across strips."""
    from xaicli._outputs.writers import write_image
    from xaicli._outputs.render import Drawing

    shape = (23, 17, 3) if channels == 3 else (23, 17)
    whole = np.random.default_rng(channels).integers(0, 256, shape, dtype=np.uint8)
    strips = [whole[:1], whole[1:9], whole[9:10], whole[10:]]
    write_image(tmp_path / "strips", Drawing(23, 17, channels, iter(strips)), image_format)
    write_image(tmp_path / "whole", whole, image_format)
    mode = "RGB" if channels == 3 else "L"  # WebP stores grayscale as RGB
    from_strips, from_whole = (np.asarray(Image.open(tmp_path / name).convert(mode)) for name in ("strips", "whole"))
    assert from_strips.shape == shape
    np.testing.assert_array_equal(from_strips, whole if image_format == "png" else from_whole)


def test_drawn_outputs_are_their_strips_put_together():
    """A 24-MP output is drawn a strip of rows at a time; at a width that makes many strips,
    the overlay, heatmap and panel equal the same pictures drawn from a numpy original."""
    from xaicli._inputs.geometry import fit_view
    from xaicli._outputs.render import draw_overlay, heatmap_image, jet_lut, overlay, panel, strip_rows

    width = 4000  # strips of a few rows
    image = np.random.default_rng(3).integers(0, 256, (3 * strip_rows(width) + 5, width, 3), dtype=np.uint8)
    heatmap = np.random.default_rng(4).uniform(0, 1, (7, 7)).astype(np.float32)
    view = fit_view(image.shape[:2], (28, 28), "crop")  # unseen columns at both sides
    picture = Image.fromarray(image)
    drawn = draw_overlay(picture, heatmap, 0.4, jet_lut(), view).pixels()
    np.testing.assert_array_equal(drawn, overlay(image, heatmap, 0.4, jet_lut(), view))
    left = int(view.seen[0]) - 1
    np.testing.assert_array_equal(drawn[:, left], image[:, left])  # unseen: the photo as it is
    whole_panel = panel(picture, heatmap, 0.4, jet_lut(), "cat 0.93 | gradcam", view)
    assert whole_panel.shape == (image.shape[0] + max(16, image.shape[0] // 10), 3 * width, 3)
    np.testing.assert_array_equal(whole_panel[:image.shape[0], 2 * width:], drawn)
    np.testing.assert_array_equal(whole_panel[:image.shape[0], :width], image)
    caption = whole_panel[image.shape[0]:]
    assert caption[:, :200].min() < 64 and caption[:, 200:].min() == 255  # dark text at the left only
    gray = heatmap_image(heatmap, image.shape[:2], view)
    assert gray.shape == image.shape[:2] and gray[:, left].max() == 0


@pytest.mark.parametrize("image_format,mean_difference", [("jpeg", 4.0), ("webp", 5.0)])
def test_lossy_formats_decode_to_the_same_size_and_close_to_the_png(image_format, mean_difference):
    from xaicli._outputs.writers import encode_image
    from xaicli._outputs.render import jet_lut, overlay

    from .conftest import REPO

    photo = np.asarray(Image.open(REPO / "sample_images" / "photos" / "chelsea_cat.jpg").convert("RGB"))[:90, :70]
    heatmap = np.random.default_rng(2).uniform(0, 1, (7, 7)).astype(np.float32)
    pixels = overlay(photo, heatmap, 0.4, jet_lut())
    lossless = np.asarray(Image.open(io.BytesIO(encode_image(pixels, "png"))))
    np.testing.assert_array_equal(lossless, pixels)
    decoded = Image.open(io.BytesIO(encode_image(pixels, image_format)))
    assert decoded.format == {"jpeg": "JPEG", "webp": "WEBP"}[image_format] and decoded.size == (70, 90)
    assert np.abs(np.asarray(decoded.convert("RGB"), float) - pixels).mean() < mean_difference
    gray = Image.open(io.BytesIO(encode_image(pixels[..., 0], image_format)))
    assert gray.size == (70, 90)


def test_a_complete_run_removes_what_killed_writers_left(tmp_path):
    from xaicli._outputs.writers import remove_temporary_files

    folder = tmp_path / "out"
    folder.mkdir()
    names = [".a.png.4242.139716262840000.tmp", "a.png", ".hidden", "x.tmp", ".b.npy.1.2.tmp.keep"]
    for name in names:
        (folder / name).write_bytes(b"x")
    (folder / ".sub.7.7.tmp").mkdir()  # a folder, whatever its name, stays
    assert remove_temporary_files([folder, tmp_path / "missing"]) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[1:] + [".sub.7.7.tmp"])
