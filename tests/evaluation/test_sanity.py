"""`xai sanity` (Adebayo et al. 2018): the trained demo model's Grad-CAM stops agreeing with itself
as the layers are randomized, while a "method" that only looks at the image (its edges, built here)
stays correlated; the figures by hand; the model file is never touched."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from xaicli._evaluation.faithfulness import spearman, ssim
from xaicli._evaluation.sanity import DEPENDENT_BELOW, cascade, means_by_step, verdicts

from ..conftest import REPO

SAMPLES = REPO / "sample_images"


def test_spearman_and_ssim_by_hand():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    # ties take their average rank: [1, 2, 2, 3] ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    a, b = np.array([0, 1.5, 1.5, 3]) - 1.5, np.arange(4.0) - 1.5
    assert spearman(np.array([1.0, 2, 2, 3]), np.arange(4.0)) == pytest.approx((a @ b) / np.sqrt((a @ a) * (b @ b)))
    assert spearman(np.ones(4), np.arange(4.0)) is None  # a flat map has no ranking
    rng = np.random.default_rng(0)
    image = rng.random((32, 32))
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(image, rng.random((32, 32))) < 0.2


def test_cascade_steps_and_verdicts():
    assert cascade(10, 4) == [1, 4, 7, 10] and cascade(3, 5) == [1, 2, 3] and cascade(0, 3) == []
    lines = verdicts({"gradcam": [1.0, 0.4, 0.05], "edges": [1.0, 0.98, DEPENDENT_BELOW]})
    assert lines[0] == "gradcam: Spearman 1.00 -> 0.40 -> 0.05 as layers are randomized: its maps depend on the model"
    assert lines[1].startswith("edges: Spearman 1.00 -> 0.98 -> 0.50: its maps barely change")


def test_grad_cam_depends_on_the_model_and_an_edge_map_does_not(tmp_path):
    from xaicli._runs.config import RunConfig
    from xaicli._explain.targets import BEST, EachClass, Target
    from xaicli._inputs.discover import discover
    from xaicli._inputs.raster import read_image
    from xaicli._inputs.geometry import to_model_input
    from xaicli._runs.decisions import prepare
    from xaicli._outputs.render import normalize_maps
    from xaicli._evaluation.sanity import compare, run_cascade

    run = prepare(RunConfig(model=SAMPLES / "demo_model.keras", inputs=(SAMPLES,), out_dir=tmp_path))
    items = list(discover([SAMPLES / "shapes"]))[:8]
    batch = np.stack([to_model_input(read_image(item.path)[0], run.info.input_size, 3, run.scaling) for item in items])

    def edges(images: np.ndarray) -> np.ndarray:  # ignores the model: the image's own gradient magnitude
        gray = images.mean(axis=-1)
        return normalize_maps(np.hypot(np.diff(gray, axis=1, prepend=0), np.diff(gray, axis=2, prepend=0)))

    def explain(target: Target) -> tuple[dict[str, np.ndarray], np.ndarray]:
        result = run.explainer.explain(batch, target)
        return {"gradcam": result.maps["gradcam"], "edges": edges(batch)}, result.classes

    names = [item.name for item in items]
    trained, classes = explain(BEST)
    comparisons = compare(names, trained, trained, run.info.input_size, 0, "")
    steps = run_cascade(lambda: explain(EachClass(tuple(classes)))[0], run.explainer.probe.weighted_layers(), 4,
                        on_step=lambda step, maps: comparisons.extend(
                            compare(names, trained, maps, run.info.input_size, step.count, step.layer)))
    assert [step.count for step in steps] == cascade(len(run.explainer.probe.weighted_layers()), 4)
    means = means_by_step(comparisons)
    assert means["gradcam"][0] == pytest.approx(1.0) and means["gradcam"][-1] < 0.3
    assert min(value for value in means["edges"] if value is not None) == pytest.approx(1.0)
    lines = verdicts(means)
    assert "gradcam" in lines[0] and "depend on the model" in lines[0]
    assert "edges" in lines[1] and "barely change" in lines[1]


def test_the_command_writes_figures_and_never_touches_the_model(tmp_path):
    from xaicli.cli import main

    model = tmp_path / "demo.keras"
    model.write_bytes((SAMPLES / "demo_model.keras").read_bytes())
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sanity", str(model), str(SAMPLES / "shapes"), "-o", str(out),
                                       "-m", "gradcam,saliency", "--steps", "3", "--max-images", "4"])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
    with open(out / "sanity.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 4 * 2 * (1 + 3)  # images x methods x (trained + steps)
    assert {row["layer"] for row in rows if row["step"] == "1"} == {"predictions"}  # the output layer first
    assert all(float(row["spearman"]) == pytest.approx(1.0) for row in rows if row["step"] == "0")
    figure = Image.open(out / "sanity.png")
    assert figure.width > 4 * 128 and figure.height > 4 * 2 * 128
    assert "gradcam: Spearman 1.00 ->" in result.output
