"""The figures of a map's trustworthiness, without TensorFlow: curves and their areas, the blur,
pointing, energy and IoU on hand-made maps, masks of another size and boxes, requirements and
means. Every expected value is worked out by hand here."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from xaicli._errors import UsageError
from xaicli._evaluation.faithfulness import (CurveJob, Means, Requirement, area_under, blurred, box_mask, curve_areas,
                                             energy_in, failed_requirements, iou, parse_requirements, perturbed,
                                             pixel_order, pointing_hit)
from xaicli._evaluation.truth import load_ground_truth
from xaicli._inputs.discover import InputImage


def test_area_under_equal_steps_is_the_trapezoid_rule():
    assert area_under(np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)  # (0.75 + 0.25) / 2
    assert area_under(np.array([0.2, 0.2])) == pytest.approx(0.2)
    assert area_under(np.array([0.0, 1.0, 1.0, 1.0])) == pytest.approx((0.5 + 1 + 1) / 3)


def test_each_step_changes_the_next_pixels_of_the_order():
    source = np.zeros((2, 2, 1), np.float32)
    target = np.arange(1, 5, dtype=np.float32).reshape(2, 2, 1)
    order = pixel_order(np.array([[0.1, 0.9], [0.5, 0.5]]))  # 1, then 2 and 3 (a tie, raster order), then 0
    assert order.tolist() == [1, 2, 3, 0]
    steps = [s[..., 0].tolist() for s in perturbed(source, target, order, 2)]
    assert steps == [[[0, 0], [0, 0]], [[0, 2], [3, 0]], [[1, 2], [3, 4]]]
    three = [s[..., 0].ravel().tolist() for s in perturbed(source, target, order, 3)]  # round(4/3)=1, round(8/3)=3
    assert three == [[0, 0, 0, 0], [0, 2, 0, 0], [0, 2, 3, 4], [1, 2, 3, 4]]


def test_curves_of_several_images_share_model_calls_and_follow_the_explained_class():
    calls = []

    def probabilities(batch: np.ndarray, regions) -> np.ndarray:  # class 1: the mean pixel; class 0: its complement
        assert regions is None  # no job has a region
        calls.append(len(batch))
        mean = batch.reshape(len(batch), -1).mean(axis=1)
        return np.stack([1 - mean, mean], axis=1)

    image = np.ones((2, 2, 1), np.float32)
    order = np.arange(4)
    deleting = CurveJob(lambda: perturbed(image, np.zeros_like(image), order, 4), explained=1, steps=4)
    inserting = CurveJob(lambda: perturbed(np.zeros_like(image), image, order, 4), explained=0, steps=4)
    areas = curve_areas([deleting, inserting], probabilities, batch_size=3)
    assert areas[0] == pytest.approx(area_under(np.array([1, 0.75, 0.5, 0.25, 0])))  # 0.5
    assert areas[1] == pytest.approx(area_under(np.array([1, 0.75, 0.5, 0.25, 0])))
    assert calls == [3, 3, 3, 1]  # ten inputs, three at a time


def test_the_blur_is_a_normalized_gaussian_with_reflected_edges():
    flat = np.full((20, 20, 3), 7.0, np.float32)
    np.testing.assert_allclose(blurred(flat), flat, rtol=1e-6)
    impulse = np.zeros((31, 31, 1), np.float32)
    impulse[15, 15] = 1.0
    spread = blurred(impulse)[..., 0]
    weights = np.exp(-np.arange(-5, 6) ** 2 / 50.0)
    weights /= weights.sum()
    np.testing.assert_allclose(spread[10:21, 10:21], np.outer(weights, weights), rtol=1e-5)
    assert spread.sum() == pytest.approx(1.0)


def test_pointing_energy_and_iou_by_hand():
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    saliency = np.zeros((40, 40), np.float32)
    saliency[15, 15] = 1.0  # on the object
    assert pointing_hit(saliency, mask, 0)
    saliency[:] = 0
    saliency[15, 29] = 1.0  # 10 pixels right of the object's last column (19)
    assert pointing_hit(saliency, mask, 10) and not pointing_hit(saliency, mask, 9.9)
    map_ = np.zeros((40, 40), np.float32)
    map_[10:20, 10:15] = 1.0  # 50 pixels on the object
    map_[30:35, 30:40] = 0.5  # 50 pixels off it, half as strong
    assert energy_in(map_, mask) == pytest.approx(50 / (50 + 25))
    assert iou(map_, mask) == pytest.approx(50 / 150)  # >= 0.5 wherever set: 50 on the object of 100, 50 off it
    assert energy_in(np.zeros((4, 4)), mask[:4, :4]) == 0.0 and iou(np.zeros((4, 4)), mask[:4, :4]) == 0.0


def test_boxes_and_masks_of_another_size_land_on_the_grid_the_map_is_measured_on(tmp_path):
    boxes = box_mask([[2, 4, 5, 7]], (6, 5), (0.5, 0.5))  # original x 2..5, y 4..7 inclusive, halved
    expected = np.zeros((6, 5), bool)
    expected[2:4, 1:3] = True
    np.testing.assert_array_equal(boxes, expected)

    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    drawn = np.zeros((20, 40), np.uint8)  # a mask at twice the image's size
    drawn[0:10, 20:40] = 255  # the top right quarter
    Image.fromarray(drawn).save(masks / "sub" / "scan.png")  # the image is scan.jpg
    item = InputImage(tmp_path / "in" / "sub" / "scan.jpg", PurePosixPath("sub/scan.jpg"))
    found = load_ground_truth(masks, None).mask(item, (10, 20), (10, 20))
    assert found.shape == (10, 20) and found[:5, 10:].all() and not found[5:].any() and not found[:, :10].any()
    assert load_ground_truth(masks, None).mask(InputImage(Path("x.png"), PurePosixPath("x.png")), (4, 4), (4, 4)) is None

    table = tmp_path / "boxes.json"
    table.write_text(json.dumps({"sub/scan.jpg": [[0, 0, 1, 1]]}))
    assert load_ground_truth(None, table).mask(item, (10, 20), (5, 10))[:1, :1].all()
    table.write_text(json.dumps({"a.png": [[0, 0, 1]]}))
    with pytest.raises(UsageError, match="expected"):
        load_ground_truth(None, table)


def test_requirements_parse_and_say_how_far_a_figure_misses():
    gates = parse_requirements("pointing>=0.9, deletion<=0.2,accuracy>=0.95")
    assert gates == (Requirement("pointing", True, 0.9), Requirement("deletion", False, 0.2),
                     Requirement("accuracy", True, 0.95))
    means = {"gradcam": {"pointing": 0.95, "deletion": 0.25}, "saliency": {"pointing": 0.5, "deletion": None}}
    assert failed_requirements(gates, means, {"accuracy": 0.99}) == [
        "pointing>=0.9 not met: saliency 0.500 (0.400 short)",
        "deletion<=0.2 not met: gradcam 0.250 (0.050 over)",
        "deletion<=0.2 not met: saliency has no deletion (no image had it)",
    ]
    for bad in ("pointing>0.9", "speed>=1", "pointing>=x"):
        with pytest.raises(UsageError, match="--require"):
            parse_requirements(bad)


def test_means_count_only_the_images_that_have_a_figure():
    means = Means.empty()
    means.add("gradcam", {"pointing": True, "energy": 0.5})
    means.add("gradcam", {"pointing": False, "energy": None})
    assert means.as_dict(["gradcam", "saliency"], ["pointing", "energy"]) == {
        "gradcam": {"pointing": 0.5, "energy": 0.5}, "saliency": {"pointing": None, "energy": None}}
