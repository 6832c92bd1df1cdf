"""--metrics, ground truth and --require through `xai run`: deletion and insertion against a numpy
computation on a linear model whose saliency map is known in advance, the demo model's Grad-CAM
against a random map, pointing/energy/IoU from boxes, and the CI gates' exit codes."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import REPO, xai

SAMPLES = REPO / "sample_images"
SIDE, STEPS = 6, 4


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """A 6x6 grayscale linear softmax classifier: the gradient of class c's logit is W[:, c], so
    the saliency map is |W[:, c]|, a known order of pixels (all magnitudes distinct)."""
    import keras

    rng = np.random.default_rng(4)
    magnitudes = rng.permutation(np.linspace(0.1, 1.0, SIDE * SIDE))
    weights = np.stack([magnitudes * rng.choice([-1, 1], SIDE * SIDE), -magnitudes * 0.5], axis=1).astype(np.float32)
    bias = np.array([0.3, -0.2], np.float32)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.layers[-1].set_weights([weights, bias])
    root = tmp_path_factory.mktemp("linear")
    model.save(root / "linear.keras")
    pixels = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    return root, weights, bias, pixels.astype(np.float64) / 255.0


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _blur_by_hand(image: np.ndarray) -> np.ndarray:
    """The 11-tap Gaussian of sigma 5 as one 2-D kernel, edges reflected, summed pixel by pixel."""
    taps = np.exp(-np.arange(-5, 6) ** 2 / 50.0)
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    padded = np.pad(image, 5, mode="reflect")
    return np.array([[np.sum(padded[r:r + 11, c:c + 11] * kernel) for c in range(SIDE)] for r in range(SIDE)])


def _area(values: list[float]) -> float:
    return sum((a + b) / 2 for a, b in zip(values, values[1:])) / (len(values) - 1)


def test_deletion_and_insertion_match_a_numpy_computation(linear, tmp_path):
    root, weights, bias, image = linear
    out = tmp_path / "out"
    result = xai("run", root / "linear.keras", root / "image.png", "-o", out, "-m", "saliency", "--preprocess",
                  "unit", "--metrics", "deletion,insertion", "--metric-steps", STEPS, "-q")
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)
    explained = int(row["class_index"])
    probability = lambda x: _softmax(x.ravel() @ weights + bias)[explained]  # noqa: E731
    assert float(row["class_prob"]) == pytest.approx(probability(image), abs=1e-6)
    order = np.argsort(-np.abs(weights[:, explained]), kind="stable")
    deleted, inserted, blur = image.ravel().copy(), _blur_by_hand(image).ravel(), image.ravel()
    deletion, insertion = [probability(deleted)], [probability(inserted)]
    for step in range(1, STEPS + 1):
        chosen = order[round((step - 1) * SIDE * SIDE / STEPS):round(step * SIDE * SIDE / STEPS)]
        deleted[chosen] = 0.0  # the black baseline, preprocessed
        inserted[chosen] = blur[chosen]
        deletion.append(probability(deleted))
        insertion.append(probability(inserted))
    assert float(row["deletion_auc"]) == pytest.approx(_area(deletion), abs=2e-6)
    assert float(row["insertion_auc"]) == pytest.approx(_area(insertion), abs=2e-6)
    assert insertion[-1] == pytest.approx(probability(image))  # the last step is the image itself


def test_a_segmentation_s_curves_follow_its_region_s_mean_probability(linear, tmp_path):
    """A linear per-pixel segmentation of the same 6x6 image (logits L = x @ W + b, two classes
    per pixel): class 1 is explained over the pixels predicted as it, so saliency is
    |sum of W[:, region, 1]|, and each curve step is class 1's mean probability over that region."""
    import keras

    root, _, _, image = linear
    rng = np.random.default_rng(8)
    weights = rng.normal(size=(SIDE * SIDE, SIDE * SIDE * 2)).astype(np.float32) * 0.5
    bias = rng.normal(size=SIDE * SIDE * 2).astype(np.float32)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(), keras.layers.Dense(SIDE * SIDE * 2),
                              keras.layers.Reshape((SIDE, SIDE, 2)), keras.layers.Softmax()])
    model.layers[1].set_weights([weights, bias])
    model.save(tmp_path / "segmenter.keras")
    out = tmp_path / "out"
    result = xai("run", tmp_path / "segmenter.keras", root / "image.png", "-o", out, "-m", "saliency", "--preprocess",
                 "unit", "--metrics", "deletion,insertion", "--metric-steps", STEPS, "-q")
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)

    def probabilities(x: np.ndarray) -> np.ndarray:  # (36,) class 1's probability at each pixel
        logits = (x.ravel() @ weights + bias).reshape(SIDE * SIDE, 2)
        return np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)

    region = probabilities(image) > 0.5
    assert 0 < region.sum() < SIDE * SIDE and row["class_index"] == "1" and int(row["region_pixels"]) == region.sum()
    probability = lambda x: probabilities(x)[region].mean()  # noqa: E731
    assert float(row["class_prob"]) == pytest.approx(probability(image), abs=1e-6)
    saliency = np.abs(weights.reshape(SIDE * SIDE, SIDE * SIDE, 2)[:, region, 1].sum(axis=1))
    order = np.argsort(-saliency, kind="stable")
    deleted, inserted, blur = image.ravel().copy(), _blur_by_hand(image).ravel(), image.ravel()
    deletion, insertion = [probability(deleted)], [probability(inserted)]
    for step in range(1, STEPS + 1):
        chosen = order[round((step - 1) * SIDE * SIDE / STEPS):round(step * SIDE * SIDE / STEPS)]
        deleted[chosen] = 0.0
        inserted[chosen] = blur[chosen]
        deletion.append(probability(deleted))
        insertion.append(probability(inserted))
    assert float(row["deletion_auc"]) == pytest.approx(_area(deletion), abs=2e-6)
    assert float(row["insertion_auc"]) == pytest.approx(_area(insertion), abs=2e-6)


def test_the_demo_models_grad_cam_beats_a_random_map(tmp_path):
    """Deleting Grad-CAM's top pixels (to gray: the demo's shapes are dark, so black would leave
    them in place) lowers the probability sooner than a random order; inserting them raises it sooner."""
    from xaicli._runs.config import RunConfig
    from xaicli._explain.targets import BEST
    from xaicli._inputs.raster import read_image
    from xaicli._inputs.geometry import to_model_input
    from xaicli._evaluation.faithfulness import CurveJob, blurred, curve_areas, perturbed, pixel_order
    from xaicli._runs.decisions import baseline_input, prepare
    from xaicli._outputs.render import upsample

    run = prepare(RunConfig(model=SAMPLES / "demo_model.keras", inputs=(SAMPLES,), out_dir=tmp_path))
    names = sorted(json.loads((SAMPLES / "shapes" / "boxes.json").read_text()))
    images = np.stack([to_model_input(read_image(SAMPLES / "shapes" / name)[0], run.info.input_size, 3, run.scaling)
                       for name in names])
    explanation = run.explainer.explain(images, BEST)
    gray = baseline_input("gray", run.info, run.scaling)
    random_maps = np.random.default_rng(0).random((len(names), 8, 8)).astype(np.float32)
    means = {}
    for label, maps in (("gradcam", explanation.maps["gradcam"]), ("random", random_maps)):
        for kind in ("deletion", "insertion"):
            jobs = []
            for index, image in enumerate(images):
                order = pixel_order(upsample(maps[index], run.info.input_size))
                source, target = (image, gray) if kind == "deletion" else (blurred(image), image)
                jobs.append(CurveJob(functools.partial(perturbed, source, target, order, 20),
                                     int(explanation.classes[index]), 20))
            means[label, kind] = np.mean(curve_areas(jobs, run.explainer.probabilities, 16))
    assert means["gradcam", "deletion"] < means["random", "deletion"] - 0.1
    assert means["gradcam", "insertion"] > means["random", "insertion"] + 0.1


@pytest.fixture(scope="module")
def boxes(tmp_path_factory) -> Path:
    recorded = json.loads((SAMPLES / "shapes" / "boxes.json").read_text())
    path = tmp_path_factory.mktemp("boxes") / "boxes.json"
    path.write_text(json.dumps({name: [entry["box"]] for name, entry in recorded.items()}))
    return path


def test_figures_against_boxes_and_their_means_in_run_json(boxes, tmp_path):
    out = tmp_path / "out"
    result = xai("run", SAMPLES / "demo_model.keras", SAMPLES / "shapes", "-o", out, "--truth-boxes", boxes,
                  "--ig-baseline", "gray", "--metrics", "deletion", "--metric-steps", 5)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert {row["pointing_hit"] for row in rows} <= {"true", "false"}
    hits = sum(row["pointing_hit"] == "true" for row in rows) / len(rows)
    assert hits >= 0.9  # as the demo's pointing game finds
    means = json.loads((out / "run.json").read_text())["metrics"]["gradcam"]
    assert means["pointing"] == pytest.approx(hits, abs=1e-6)
    for figure, column in (("energy", "energy_in"), ("iou", "iou"), ("deletion", "deletion_auc")):
        assert means[figure] == pytest.approx(np.mean([float(row[column]) for row in rows]), abs=1e-5)
        assert all(0 <= float(row[column]) <= 1 for row in rows)
    assert f"gradcam: deletion {means['deletion']:.3f}" in result.output


def test_requirements_pass_fail_with_exit_3_or_are_refused_before_the_run(boxes, tmp_path):
    common = [SAMPLES / "demo_model.keras", SAMPLES / "shapes", "--truth-boxes", boxes, "-q"]
    met = xai("run", *common, "-o", tmp_path / "met", "--require", "pointing>=0.8,energy>=0.1")
    assert met.exit_code == 0, met.output
    unmet = xai("run", *common, "-o", tmp_path / "unmet", "--require", "pointing>=0.8,iou>=0.99")
    assert unmet.exit_code == 3
    assert "requirement iou>=0.99 not met: gradcam" in unmet.output and "short" in unmet.output
    assert len(_rows(tmp_path / "unmet")) == 12 and (tmp_path / "unmet" / "index.html").exists()
    assert len(list((tmp_path / "unmet").glob("*.gradcam.png"))) == 12  # everything is still written
    unknown = xai("run", *common, "-o", tmp_path / "unknown", "--require", "beauty>=1")
    assert unknown.exit_code == 2 and "--require 'beauty>=1'" in unknown.output
    absent = xai("run", *common, "-o", tmp_path / "absent", "--require", "deletion<=0.3")
    assert absent.exit_code == 2 and "does not compute deletion; add --metrics deletion" in absent.output
    assert not (tmp_path / "unknown").exists() and not (tmp_path / "absent").exists()


def test_the_page_sorts_by_a_figure_and_filters_missed_objects(boxes, browser, tmp_path):
    from ..conftest import wait_until

    wrong = json.loads(boxes.read_text())
    for name in sorted(wrong)[::3]:  # a third of the boxes moved to a corner the maps do not point at
        wrong[name] = [[0, 0, 3, 3]]
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(wrong))
    out = tmp_path / "out"
    result = xai("run", SAMPLES / "demo_model.keras", SAMPLES / "shapes", "-o", out, "--truth-boxes", moved,
                  "--metrics", "deletion", "--metric-steps", 4, "--pointing-tolerance", 0, "-q")
    assert result.exit_code == 0, result.output
    rows = {row["input"]: row for row in _rows(out)}
    page = browser.new_page(viewport={"width": 1280, "height": 4000})
    page.goto((out / "index.html").as_uri())
    wait_until(page, "document.querySelectorAll('#gallery .card').length === 12")
    page.select_option("#sort", "figure-asc:deletion")
    order = page.eval_on_selector_all("#gallery .card", "cards => cards.map(c => c.dataset.input)")
    deletion = [float(rows[name]["deletion_auc"]) for name in order]
    assert deletion == sorted(deletion)
    page.select_option("#filter-pointing", "miss")
    missed = page.eval_on_selector_all("#gallery .card", "cards => cards.map(c => c.dataset.input)")
    assert set(missed) == {name for name, row in rows.items() if row["pointing_hit"] == "false"}
    assert len(missed) >= 4
    page.close()
