"""The bundled demo model: Grad-CAM points at the recorded object boxes (the pointing game)."""

import json

import numpy as np

from xaicli.config import RunConfig
from xaicli.explainers.cam import TOP_CLASS
from xaicli.images import load_image, to_model_input
from xaicli.pipeline import prepare
from xaicli.render import upsample

from .conftest import REPO

SAMPLES = REPO / "sample_images"


def test_gradcam_peak_lands_in_the_object_box_on_the_demo_model():
    boxes = json.loads((SAMPLES / "shapes" / "boxes.json").read_text())
    run = prepare(RunConfig(model=SAMPLES / "demo_model.keras", inputs=(SAMPLES,), out_dir=SAMPLES / "unused",
                            labels=SAMPLES / "labels.txt"))
    names = sorted(boxes)
    images = [load_image(SAMPLES / "shapes" / name) for name in names]
    batch = np.stack([to_model_input(i, run.info.input_size, 3, run.preprocess) for i in images])
    result = run.explainer.explain(batch, np.full(len(names), TOP_CLASS))
    hits = 0
    for name, image, heatmap in zip(names, images, result.maps["gradcam"]):
        full = upsample(heatmap, image.shape[:2])
        row, col = np.unravel_index(np.argmax(full), full.shape)
        left, top, right, bottom = boxes[name]["box"]
        hits += left <= col <= right and top <= row <= bottom
    assert hits / len(names) >= 0.9, f"pointing game {hits}/{len(names)}"
    accuracy = np.mean(result.classes == [boxes[n]["class_index"] for n in names])
    assert accuracy >= 0.9
