"""--intensity without TensorFlow: each mapping checked against values worked out by hand, and a
12-bit slice in a 16-bit PNG that no longer reaches the model almost black."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaicli._errors import UsageError
from xaicli._inputs.intensity import Intensity, parse_intensity, to_8bit
from xaicli._inputs.raster import read_image


def test_window_follows_the_dicom_linear_formula():
    # window 40,400: 0 up to 40 - 0.5 - 199.5 = -160, 255 above 239; between ((x - 39.5) / 399 + 0.5) * 255
    values = np.array([[-1000, -160, 139.5, 239, 239.5, 3000]], np.float32)
    gray, note = to_8bit(values, parse_intensity("window:40,400"))
    assert gray.tolist() == [[0, 0, 191, 255, 255, 255]]
    assert note == "intensity: window 40,400"


def test_a_window_of_width_one_is_a_threshold():
    gray, _ = to_8bit(np.array([[9, 10, 11]], np.int16), Intensity("window", 10, 1))
    assert gray.tolist() == [[0, 255, 255]]  # above c - 0.5 = 9.5


def test_minmax_stretches_each_image_to_its_own_range():
    gray, note = to_8bit(np.array([[100, 1000, 3000]], np.uint16), Intensity("minmax"))
    assert gray.tolist() == [[0, 79, 255]]  # 900 / 2900 * 255 = 79.1
    assert note == "intensity: minmax (100..3000 to 0..255)"
    assert to_8bit(np.full((2, 2), 7, np.uint16), Intensity("minmax"))[0].max() == 0  # flat: no contrast


def test_percentiles_clip_the_tails():
    values = np.arange(101, dtype=np.uint16).reshape(1, -1)  # percentile p of 0..100 is p
    gray, note = to_8bit(values, parse_intensity("percentile:10,90"))
    assert gray[0, [5, 10, 30, 90, 95]].tolist() == [0, 0, 64, 255, 255]  # 20 / 80 * 255 = 63.75
    assert note == "intensity: percentile 10..90 (10..90 to 0..255)"


def test_range_is_the_value_types_fixed_mapping():
    gray, note = to_8bit(np.array([[0, 257, 65535]], np.uint16), Intensity("range"))
    assert gray.tolist() == [[0, 1, 255]] and note == ""
    assert to_8bit(np.array([[0.0, 0.25, 1.0]], np.float32), Intensity("range"))[0].tolist() == [[0, 64, 255]]
    assert to_8bit(np.array([[0.0, 100.0, 300.0]], np.float32), Intensity("range"))[0].tolist() == [[0, 100, 255]]


def test_auto_takes_the_files_own_window_or_else_minmax():
    values = np.array([[0, 50, 100]], np.int16)
    assert to_8bit(values, Intensity("auto"), own_window=(50, 2))[1] == "intensity: window 50,2"
    assert to_8bit(values, Intensity("auto"))[0].tolist() == [[0, 128, 255]]  # minmax: 127.5 rounds to even


def test_non_finite_values_count_as_the_lowest():
    gray, _ = to_8bit(np.array([[np.nan, 1.0, 3.0, np.inf]], np.float32), Intensity("minmax"))
    assert gray.tolist() == [[0, 0, 255, 0]]


@pytest.mark.parametrize("text", ["bogus", "minmax:3", "percentile:99,1", "percentile:1", "window:40,0", "window:a,b"])
def test_bad_choices_are_one_line_usage_errors(text):
    with pytest.raises(UsageError, match="--intensity") as error:
        parse_intensity(text)
    assert "\n" not in str(error.value)


def test_a_12_bit_slice_in_a_16_bit_png_is_stretched_not_left_black(tmp_path):
    slice_values = np.linspace(100, 3000, 40 * 30).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "mri.png"
    Image.fromarray(slice_values).save(path)
    stretched, note = read_image(path)
    assert stretched.min() == 0 and stretched.max() == 255 and note.startswith("intensity: minmax (100..3000")
    fixed, note = read_image(path, intensity=Intensity("range"))
    assert fixed.max() <= 12 and note == ""  # the old mapping: 3000 / 257
    eight_bit = tmp_path / "photo.png"
    Image.fromarray((slice_values // 16).astype(np.uint8)).save(eight_bit)
    assert read_image(eight_bit, intensity=parse_intensity("window:0,2"))[1] == ""  # 8-bit images are never changed
