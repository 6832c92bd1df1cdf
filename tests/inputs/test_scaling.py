"""The preprocessing presets and custom scaling (_inputs/scaling.py) against hand-computed values."""

import numpy as np
import pytest

from xaicli._inputs.scaling import PRESETS


PIXEL = np.array([[[0, 127.5, 255]]], np.float32)


@pytest.mark.parametrize("preset,expected", [
    ("none", [0, 127.5, 255]),
    ("unit", [0, 0.5, 1]),
    ("symmetric", [-1, 0, 1]),
    ("torch", [(0 - 123.675) / 58.395, (127.5 - 116.28) / 57.12, (255 - 103.53) / 57.375]),
    ("caffe", [255 - 103.939, 127.5 - 116.779, 0 - 123.68]),  # BGR order
])
def test_presets_against_hand_computed_values(preset, expected):
    np.testing.assert_allclose(PRESETS[preset](PIXEL)[0, 0], expected, rtol=1e-5)


def test_custom_scaling_against_hand_computed_values():
    from xaicli._inputs.scaling import custom_scaling

    scaled = custom_scaling([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])(PIXEL)[0, 0]
    # (0/255 - 0.5)/0.5 = -1; (127.5/255 - 0.25)/0.25 = 1; (255/255 - 0)/2 = 0.5
    np.testing.assert_allclose(scaled, [-1.0, 1.0, 0.5], rtol=1e-6)
