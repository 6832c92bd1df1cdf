"""The geometry between an image and the model input (_inputs/geometry.py): views, letterbox, crop, maps drawn back."""

import numpy as np
import pytest
from PIL import Image

from xaicli._inputs.geometry import View, box_region, fit_view, grid_points, sampled_labels, to_model_input
from xaicli._inputs.scaling import PRESETS


def test_to_model_input_resizes_and_converts_channels():
    image = np.zeros((40, 30, 3), np.uint8)
    image[..., 0] = 255  # pure red: luma 0.299 * 255
    rgb = to_model_input(image, (8, 6), 3, PRESETS["unit"])
    gray = to_model_input(image, (8, 6), 1, PRESETS["none"])
    assert rgb.shape == (8, 6, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])
    assert gray.shape == (8, 6, 1) and abs(gray[0, 0, 0] - 76) <= 1


def test_fit_view_geometry_by_hand():
    # A 40x80 (height x width) image into a 20x20 model input.
    assert fit_view((40, 80), (20, 20), "stretch") == View((0, 0, 80, 40), (0, 0, 1, 1))
    # letterbox: scaled by 1/4 to 10x20, padded 5 rows above and below.
    assert fit_view((40, 80), (20, 20), "letterbox") == View((0, 0, 80, 40), (0, 0.25, 1, 0.75))
    # crop: the central 40x40 square, columns 20..60.
    assert fit_view((40, 80), (20, 20), "crop") == View((20, 0, 60, 40), (0, 0, 1, 1))
    # A tall image into a wide input: crop keeps rows 30..50 of 80.
    assert fit_view((80, 40), (10, 20), "crop") == View((0, 30, 40, 50), (0, 0, 1, 1))


def test_letterbox_pads_with_black_and_keeps_the_picture_undistorted():
    image = np.full((2, 4, 3), 200, np.uint8)  # 2 rows x 4 columns into 4x4
    pixels = to_model_input(image, (4, 4), 3, PRESETS["none"], "letterbox")[..., 0]
    np.testing.assert_array_equal(pixels, [[0] * 4, [200] * 4, [200] * 4, [0] * 4])
    # padding is pixel 0 before scaling: -1 in the symmetric preset
    assert to_model_input(image, (4, 4), 3, PRESETS["symmetric"], "letterbox")[0, 0, 0] == -1.0


def test_crop_keeps_the_centre_and_cuts_the_long_side():
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :, 0] = np.arange(8) * 10  # columns 0, 10, ..., 70
    pixels = to_model_input(image, (4, 4), 3, PRESETS["none"], "crop")[..., 0]
    np.testing.assert_array_equal(pixels, np.tile([20.0, 30.0, 40.0, 50.0], (4, 1)))


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("shape", [(60, 90), (90, 60), (50, 50)])
def test_a_map_drawn_back_with_its_view_peaks_where_the_object_is(resize, shape):
    """Round trip: the model input itself, used as a perfect detector map, put back over the
    original image with the view, peaks on the object in every resize mode."""
    from xaicli._outputs.render import upsample

    image = np.zeros((*shape, 3), np.uint8)
    row, column = shape[0] // 2 + 8, shape[1] // 2 - 8  # near the centre, so a crop keeps it
    image[row - 3:row + 3, column - 3:column + 3] = 255
    detector = to_model_input(image, (24, 24), 1, PRESETS["unit"], resize)[..., 0]
    back = upsample(detector, shape, fit_view(shape, (24, 24), resize))
    peak = np.unravel_index(np.nanargmax(back), shape)
    assert abs(peak[0] - row) <= 3 and abs(peak[1] - column) <= 3


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("shape", [(600, 900), (900, 600), (500, 500)])
def test_at_a_capped_output_size_the_map_still_peaks_where_the_object_is(resize, shape):
    """The same round trip, drawn at --max-size 100: aspect kept, the view scaled with the image."""
    from xaicli._inputs.geometry import output_size, shown_at
    from xaicli._outputs.render import upsample

    image = np.zeros((*shape, 3), np.uint8)
    row, column = shape[0] // 2 + 80, shape[1] // 2 - 80
    image[row - 30:row + 30, column - 30:column + 30] = 255
    detector = to_model_input(image, (24, 24), 1, PRESETS["unit"], resize)[..., 0]
    size = output_size(shape, 100)
    assert max(size) == 100 and abs(size[0] / size[1] - shape[0] / shape[1]) < 0.02
    shown, view = shown_at(Image.fromarray(image), fit_view(shape, (24, 24), resize), size)
    assert shown.size == (size[1], size[0])
    back = upsample(detector, size, view)
    peak = np.unravel_index(np.nanargmax(back), size)
    scale = size[0] / shape[0]
    assert abs(peak[0] - row * scale) <= 4 and abs(peak[1] - column * scale) <= 4
    assert output_size(shape, 2000) == shape  # never enlarged


def test_grid_cells_land_on_the_original_by_hand():
    """A 100x50 photo letterboxed into 32x32: its rows fill the input's middle half, so a 4x4
    grid's first and last rows lie in the padding; cell centres are 25 original pixels apart."""
    view = fit_view((50, 100), (32, 32), "letterbox")
    x, y = grid_points(view, (4, 4))
    np.testing.assert_allclose(x[1], [12.5, 37.5, 62.5, 87.5])
    np.testing.assert_allclose(y[:, 0], [np.nan, 12.5, 37.5, np.nan])


def test_a_box_and_a_label_map_on_the_output_grid():
    view = fit_view((50, 100), (32, 32), "letterbox")
    expected = np.zeros((4, 4), np.float32)
    expected[1, :2] = 1  # centres (12.5, 12.5) and (37.5, 12.5) fall in x < 40, y < 20
    np.testing.assert_array_equal(box_region(view, (4, 4), (0, 0, 40, 20)), expected)
    tiny = box_region(view, (4, 4), (60, 30, 61, 31))  # no centre inside: the nearest cell, (62.5, 37.5)
    assert tiny.sum() == 1 and tiny[2, 2] == 1
    labels = np.zeros((25, 50), np.int64)  # half the photo's size: stretched over it
    labels[:, 25:] = 2
    np.testing.assert_array_equal(sampled_labels(labels, view, (50, 100), (4, 4)),
                                  [[-1, -1, -1, -1], [0, 0, 2, 2], [0, 0, 2, 2], [-1, -1, -1, -1]])
