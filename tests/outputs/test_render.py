"""render.py: colormap, normalization, upsampling and blending, without TensorFlow."""

import numpy as np
import pytest

from xaicli._inputs.geometry import View
from xaicli._outputs.render import UNSEEN_GRAY, colorize, heatmap_image, jet_lut, normalize_maps, overlay, upsample


def test_jet_lut_runs_from_dark_blue_through_green_to_dark_red():
    lut = jet_lut()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    # jet(0) = (0, 0, 0.5) and jet(1) = (0.5, 0, 0)
    np.testing.assert_array_equal(lut[0], [0, 0, 128])
    np.testing.assert_array_equal(lut[255], [128, 0, 0])
    # v = 128/255: r = 255 * (1.5 - |4v - 3|) = 129.5..., b = 255 * (1.5 - |4v - 1|) = 125.5...
    np.testing.assert_array_equal(lut[128], [130, 255, 126])


def test_normalize_scales_each_map_on_its_own():
    raw = np.stack([np.arange(4.0).reshape(2, 2), 10 + 5 * np.arange(4.0).reshape(2, 2)])
    maps = normalize_maps(raw)
    expected = np.array([[0, 1 / 3], [2 / 3, 1]], dtype=np.float32)
    np.testing.assert_allclose(maps[0], expected, atol=1e-7)
    np.testing.assert_allclose(maps[1], expected, atol=1e-7)
    assert maps.dtype == np.float32


@pytest.mark.parametrize("value", [0.0, 3.0, np.nan])
def test_flat_or_nan_map_becomes_zeros_not_nan(value):
    maps = normalize_maps(np.full((1, 3, 3), value))
    assert np.all(maps == 0.0)


def test_upsample_keeps_range_size_and_peak_location():
    heat = np.zeros((4, 4), np.float32)
    heat[1, 2] = 1.0
    big = upsample(heat, (40, 80))
    assert big.shape == (40, 80) and big.min() >= 0 and big.max() <= 1
    row, col = np.unravel_index(np.argmax(big), big.shape)
    assert 10 <= row < 20 and 40 <= col < 60  # inside the source cell (1, 2) scaled 10x20


def test_overlay_blends_at_the_original_size():
    image = np.full((7, 9, 3), 200, np.uint8)
    heat = np.ones((2, 2), np.float32)
    lut = jet_lut()
    out = overlay(image, heat, alpha=0.25, lut=lut)
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8
    expected = np.floor(0.75 * 200 + 0.25 * lut[255].astype(float) + 0.5)  # rounded half up
    np.testing.assert_array_equal(out[3, 4], expected)
    np.testing.assert_array_equal(overlay(image, heat, alpha=1.0, lut=lut)[0, 0], lut[255])
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0, lut=lut), image)


def test_colorize_indexes_the_lut_by_rounded_value():
    lut = jet_lut()
    colours = colorize(np.array([[0.0, 1.0, 0.5]]), lut)
    np.testing.assert_array_equal(colours[0], lut[[0, 255, 128]])


@pytest.mark.parametrize("name,index,expected", [
    ("viridis", 0, (68, 1, 84)),  # matplotlib: viridis(0) = (0.267004, 0.004874, 0.329415)
    ("viridis", 255, (253, 231, 37)),  # viridis(1) = (0.993248, 0.906157, 0.143936)
    ("inferno", 0, (0, 0, 4)),  # inferno(0) = (0.001462, 0.000466, 0.013866)
    ("turbo", 255, (122, 4, 3)),  # turbo(1) = (0.4796, 0.01583, 0.01055)
    ("gray", 128, (128, 128, 128)),
])
def test_colormap_tables(name, index, expected):
    from xaicli._outputs.render import COLORMAPS

    lut = COLORMAPS[name]()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[index]) == expected


def test_panel_layout_is_image_heatmap_overlay_over_a_caption():
    from xaicli._outputs.render import panel

    image = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    heat = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    lut = jet_lut()
    picture = panel(image, heat, 0.4, lut, "cat 0.93")
    assert picture.shape == (30 + 16, 60, 3)
    np.testing.assert_array_equal(picture[:30, :20], image)
    np.testing.assert_array_equal(picture[:30, 20:40], colorize(upsample(heat, (30, 20)), lut))
    np.testing.assert_array_equal(picture[:30, 40:], overlay(image, heat, 0.4, lut))
    caption = picture[30:]
    assert (caption < 128).any() and (caption == 255).mean() > 0.5  # dark text on white


def test_letterboxed_map_is_cut_to_the_picture_before_it_is_stretched_over_the_image():
    view = View((0, 0, 8, 4), (0, 0.25, 1, 0.75))  # a 4x8 image letterboxed into rows 1..2 of 4
    columns = np.tile(np.float32([0, 0, 1, 1]), (4, 1))  # the right half is hot
    back = upsample(columns, (4, 8), view)
    assert back.shape == (4, 8) and np.isfinite(back).all()
    np.testing.assert_allclose(back[:, :3], 0.0)
    np.testing.assert_allclose(back[:, 5:], 1.0)
    padding_hot = np.float32([[1] * 4, [0] * 4, [0] * 4, [1] * 4])
    # Only the bilinear bleed at the picture's edge remains of the hot padding rows; stretching
    # the whole map would have put 1.0 on the image's top and bottom rows.
    assert upsample(padding_hot, (4, 8), view).max() <= 0.25
    assert upsample(padding_hot, (4, 8)).max() == 1.0


def test_cropped_map_covers_only_what_the_model_saw():
    heat = np.ones((2, 2), np.float32)
    view = View((2, 0, 6, 4))  # the central 4x4 of a 4x8 image
    back = upsample(heat, (4, 8), view)
    assert np.isnan(back[:, :2]).all() and np.isnan(back[:, 6:]).all()
    np.testing.assert_allclose(back[:, 2:6], 1.0)
    image = np.full((4, 8, 3), 90, np.uint8)
    blended = overlay(image, heat, 0.5, jet_lut(), view)
    np.testing.assert_array_equal(blended[:, :2], image[:, :2])  # unseen: the image untouched
    assert (blended[:, 2:6] != image[:, 2:6]).any()
    assert (heatmap_image(heat, (4, 8), view)[:, :2] == 0).all()
    assert (colorize(back, jet_lut())[:, :2] == UNSEEN_GRAY).all()


def test_panel_shows_unseen_parts_in_gray():
    from xaicli._outputs.render import panel

    image = np.full((20, 40, 3), 90, np.uint8)
    picture = panel(image, np.ones((2, 2), np.float32), 0.4, jet_lut(), "x", View((10, 0, 30, 20)))
    assert (picture[:20, 40:50] == UNSEEN_GRAY).all()  # heatmap pane, left of the crop
    np.testing.assert_array_equal(picture[:20, 80:90], image[:, :10])  # overlay pane, unseen


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("size", [(700, 333), (257, 900), (1, 5), (256, 40)])
def test_upsampled_strips_put_together_equal_the_whole(resize, size):
    """Overlays and heatmaps are drawn a strip of rows at a time; the strips must be the rows of
    the whole map, NaN (unseen) included."""
    from xaicli._inputs.geometry import fit_view
    from xaicli._outputs.render import upsample

    heatmap = np.random.default_rng(size[0]).uniform(0, 1, (7, 9)).astype(np.float32)
    view = fit_view(size, (28, 36), resize)
    whole = upsample(heatmap, size, view)
    rows = 64
    strips = [upsample(heatmap, size, view, slice(top, top + rows)) for top in range(0, size[0], rows)]
    np.testing.assert_allclose(np.concatenate(strips), whole, atol=1e-6)  # NaN where whole is NaN
