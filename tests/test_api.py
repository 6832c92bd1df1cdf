"""The Python API: what ``Explainer.explain`` returns equals what ``xai run`` writes, a model in
memory is explained, the kinds of images agree, the compiled steps are kept, and ``xaicli.run``
returns the run's summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xaicli
from xaicli._outputs.writers import encode_image

from .conftest import SIZE

LABELS = ["ellipse", "rectangle", "triangle"]
SAVED = "overlay,heatmap,raw,panel"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Three images of other sizes and modes than the model's input; one 16-bit."""
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("photos")
    paths = [folder / "a.png", folder / "b.png", folder / "deep.png"]
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (50, 20), dtype=np.uint8), mode="L").save(paths[1])
    Image.fromarray(rng.integers(0, 4096, (24, 24), dtype=np.uint16)).save(paths[2])
    return paths


def _cli_run(model: Path, inputs: list[Path], out: Path, *options: str) -> list[dict]:
    labels = out.parent / "labels.txt"
    labels.write_text("\n".join(LABELS))
    subprocess.run([sys.executable, "-m", "xaicli", "run", str(model), *map(str, inputs), "-o", str(out), "-q",
                    "--labels", str(labels), "--format", "jsonl", "--save", SAVED, "--no-report", *options],
                   check=True)
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _without_files(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("input", "output")}


@pytest.mark.parametrize("target", [{}, {"target": "topk", "top_k": 2}], ids=["predicted", "topk"])
def test_the_api_gives_what_the_command_writes(tiny_model, photos, tmp_path, target):
    """Maps equal the raw .npy files, rows equal the table's, and the PIL images equal the PNGs
    pixel for pixel (an overlay this small is one strip: byte for byte once encoded)."""
    methods = ["gradcam", "saliency"]
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in target.items()]
    table = _cli_run(tiny_model, photos, tmp_path / "out", "--method", ",".join(methods), *flags)
    explanation = xaicli.Explainer(tiny_model, methods=methods, labels=LABELS, **target).explain(photos)

    assert [_without_files(r) for r in explanation.predictions] == [_without_files(r) for r in table]
    assert [r["input"] for r in explanation.predictions] == [r["input"] for r in table]
    ranks = [1, 2] if target else [None]
    for index, path in enumerate(photos):
        for method in methods:
            for rank in ranks:
                tag = f".top{rank}" if rank else ""
                written = tmp_path / "out" / f"{path.name}.{method}{tag}"
                raw = explanation.maps[method][index] if rank is None else explanation.maps[method][index, rank - 1]
                np.testing.assert_array_equal(raw, np.load(f"{written}.npy"))
                for kind, suffix in (("overlay", ".png"), ("heatmap", ".heatmap.png"), ("panel", ".panel.png")):
                    drawn = np.asarray(getattr(explanation, kind)(index, method, rank=rank or 1))
                    np.testing.assert_array_equal(drawn, np.asarray(Image.open(f"{written}{suffix}")))
                    if kind == "overlay":  # one strip: the same file from the same pixels
                        assert encode_image(drawn) == Path(f"{written}{suffix}").read_bytes()


def test_the_maps_are_in_range_and_shaped_by_method(tiny_model, photos):
    explanation = xaicli.Explainer(tiny_model, methods="gradcam,saliency").explain(photos)
    assert explanation.maps["gradcam"].shape == (3, SIZE - 4, SIZE - 4)  # conv_b's grid: two 3x3 'valid' convs
    assert explanation.maps["saliency"].shape == (3, SIZE, SIZE)  # the model input
    for maps in explanation.maps.values():
        assert maps.dtype == np.float32 and maps.min() >= 0 and maps.max() <= 1
    assert explanation.overlay(1, "gradcam").size == (20, 50)  # the original's (width, height)
    assert explanation.names == tuple(map(str, photos))
    assert explanation.notes[2].startswith("intensity: minmax")  # the 16-bit image, as the table says


def _model_in_memory():
    """A classifier never saved: a bright square's location decides its class (left or right)."""
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 1))
    x = layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="head")(x))
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 2), np.float32)])
    model.get_layer("head").set_weights([np.eye(2, dtype=np.float32), np.zeros(2, np.float32)])
    return model


def test_a_model_in_memory_is_explained_and_every_kind_of_image_agrees(tmp_path):
    """Paths, PIL images, single arrays, and one batch array give the same maps; the map peaks on
    the bright square."""
    model = _model_in_memory()
    weights = [w.copy() for w in model.get_weights()]
    pixels = np.zeros((SIZE, SIZE), np.uint8)
    pixels[3:6, 10:13] = 255
    path = tmp_path / "square.png"
    Image.fromarray(pixels).save(path)
    explainer = xaicli.Explainer(model, methods="gradcam,saliency", preprocess="unit")
    assert explainer.layer == "conv" and explainer.classes == 2 and explainer.input_size == (SIZE, SIZE)
    explanation = explainer.explain([path, Image.open(path), pixels, pixels[..., None]])
    batch = explainer.explain(np.stack([pixels[..., None]] * 2))
    for method, maps in explanation.maps.items():
        for other in maps[1:]:
            np.testing.assert_array_equal(other, maps[0])
        np.testing.assert_array_equal(batch.maps[method][0], maps[0])
        assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) in {(y, x) for y in range(3, 6) for x in range(10, 13)}
    assert [r["input"] for r in explanation.predictions[::2]] == [str(path), str(path), "<array 2>", "<array 3>"]
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)  # the user's model is left as it was


def test_a_float_array_is_read_as_a_float_file_is(tmp_path, tiny_model):
    """Deep arrays go through intensity, as a float TIFF does: the same maps either way."""
    values = np.random.default_rng(2).normal(100.0, 30.0, (20, 24)).astype(np.float32)
    path = tmp_path / "float.tiff"
    Image.fromarray(values, mode="F").save(path)
    explanation = xaicli.Explainer(tiny_model).explain([values, path])
    np.testing.assert_array_equal(explanation.maps["gradcam"][0], explanation.maps["gradcam"][1])
    assert explanation.notes[0] == explanation.notes[1] != ""


def test_a_second_call_reuses_the_compiled_steps(tiny_model, photos):
    explainer = xaicli.Explainer(tiny_model, methods="gradcam,smoothgrad", smoothgrad_samples=2, batch_size=2)
    steps = explainer._prepared.explainer  # the compiled steps the Explainer keeps
    explainer.explain(photos)
    traced = (steps._step.experimental_get_tracing_count(), steps._input_gradient.experimental_get_tracing_count())
    explainer.explain(photos[:1], target_class=1)
    explainer.explain(photos[::-1], target="topk", top_k=2)
    assert (steps._step.experimental_get_tracing_count(),
            steps._input_gradient.experimental_get_tracing_count()) == traced == (1, 1)


def test_bad_options_raise_the_command_lines_messages(tiny_model, photos):
    with pytest.raises(xaicli.UsageError, match=r"^--alpha must be between 0 and 1, got 2$"):
        xaicli.Explainer(tiny_model, alpha=2)
    with pytest.raises(xaicli.UsageError, match=r"^unknown method 'gradcan'; choose from gradcam, "):
        xaicli.Explainer(tiny_model, methods="gradcan")
    with pytest.raises(xaicli.UsageError, match=r"^unknown option 'batchsize'; options are "):
        xaicli.Explainer(tiny_model, batchsize=4)
    with pytest.raises(xaicli.UsageError, match=r"^labels has 2 names but the model has 3 classes$"):
        xaicli.Explainer(tiny_model, labels=["a", "b"])
    explainer = xaicli.Explainer(tiny_model)
    with pytest.raises(xaicli.UsageError, match=r"^layer is settled when the Explainer is made"):
        explainer.explain(photos, layer="conv_a")
    with pytest.raises(xaicli.UsageError, match=r"^--class 7 is out of range: the model has 3 classes"):
        explainer.explain(photos, target_class=7)
    with pytest.raises(xaicli.ImageError, match=r"^image 1 \(.*missing.png\): file not found"):
        explainer.explain([photos[0], photos[0].with_name("missing.png")])
    with pytest.raises(xaicli.ImageError, match=r"^images array of shape \(5, 16, 16\): give \(H, W\)"):
        explainer.explain(np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(xaicli.ModelError):
        xaicli.Explainer(photos[0])
    with pytest.raises(xaicli.UsageError, match="^xaicli.run takes a model file"):
        xaicli.run(_model_in_memory(), photos, photos[0].parent / "out")


def test_run_returns_the_summary_the_command_prints(tiny_model, image_folder, tmp_path):
    """``xaicli.run`` is ``xai run`` without the printing: counts from the record in memory, the
    same as run.json's, and the exit status the command would give."""
    summary = xaicli.run(tiny_model, image_folder, tmp_path / "out", methods=["gradcam"], save="overlay,raw",
                         report=False)
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary.counts == {key: manifest["counts"][key] for key in summary.counts}
    assert summary.counts["explained"] == 3 and summary.counts["failed"] == 1 and summary.images == 4
    assert summary.status == manifest["status"] == "complete"
    assert summary.exit_status == 1 and summary.first_failure.startswith(str(image_folder / "broken.jpg"))
    assert summary.table == tmp_path / "out" / "predictions.csv" and summary.report is None
    assert (tmp_path / "out" / "a.png.gradcam.npy").exists()
    with pytest.raises(xaicli.UsageError, match="exists"):
        xaicli.run(tiny_model, image_folder, tmp_path / "out")
    again = xaicli.run(tiny_model, [image_folder], tmp_path / "out", skip_existing=True, report=False)
    assert again.counts["skipped"] == 3 and again.exit_status == 1
