"""Fitting a whole volume to a 3-D model's input and putting its map back on the scan (numpy only):
trilinear resampling checked on linear fields, which it must reproduce exactly, and the
letterbox and crop geometry placed where the 2-D rules place them."""

from __future__ import annotations

import numpy as np
import pytest

from xaicli._inputs.volumes import fit_volume_view, fitted_volume, scan_map


def _field(shape, slopes=(1.0, 2.0, 3.0), offset=5.0):
    """A linear field over voxel centres: offset + sum(slope * (index + 0.5))."""
    grids = np.meshgrid(*(np.arange(n) + 0.5 for n in shape), indexing="ij")
    return (offset + sum(s * g for s, g in zip(slopes, grids))).astype(np.float32)


def test_the_same_size_is_the_volume_itself():
    values = np.random.default_rng(0).random((5, 7, 6)).astype(np.float32)
    assert np.array_equal(fitted_volume(values, (5, 7, 6), fit_volume_view((5, 7, 6), (5, 7, 6))), values)
    assert np.allclose(scan_map(values, fit_volume_view((5, 7, 6), (5, 7, 6)), (5, 7, 6)), values)


def test_stretching_reproduces_a_linear_field_at_the_model_voxels_centres():
    shape, size = (10, 12, 8), (5, 6, 16)
    fitted = fitted_volume(_field(shape), size, fit_volume_view(shape, size))
    # Model voxel n of N covers the scan's extent n/N..(n+1)/N: its centre is at (n + 0.5) * shape / size.
    centres = [(np.arange(m) + 0.5) * n / m for n, m in zip(shape, size)]
    expected = 5.0 + sum(s * g for s, g in zip((1.0, 2.0, 3.0), np.meshgrid(*centres, indexing="ij")))
    # Inside, linear interpolation is exact; at the ends (half a voxel) the edge value is held.
    inner = tuple(slice(1, -1) if m > n else slice(None) for n, m in zip(shape, size))
    assert np.allclose(fitted[inner], expected[inner], atol=1e-4)


def _resampled_by_interp(values: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """``values`` stretched to ``size`` by np.interp along each axis in turn (ends held)."""
    for axis, count in enumerate(size):
        coordinates = (np.arange(count) + 0.5) * values.shape[axis] / count - 0.5
        values = np.apply_along_axis(lambda line: np.interp(coordinates, np.arange(len(line)), line), axis, values)
    return values


@pytest.mark.parametrize("shape, size", [((4, 5, 3), (16, 9, 7)), ((13, 8, 10), (5, 8, 3))])
def test_resampling_holds_the_edge_voxels_where_a_field_is_not_linear(shape, size):
    """Every voxel, ends included, equals separable linear interpolation by np.interp: the half
    voxel past the outermost centres takes the edge value, as tf.image.resize's bilinear does."""
    values = np.random.default_rng(1).random(shape).astype(np.float32)
    expected = _resampled_by_interp(values.astype(np.float64), size)
    assert np.allclose(fitted_volume(values, size, fit_volume_view(shape, size)), expected, atol=1e-5)
    assert np.allclose(scan_map(values, fit_volume_view(size, shape), size), expected, atol=1e-5)


def test_a_map_put_back_on_the_scan_follows_the_same_geometry():
    shape, size = (9, 12, 20), (3, 4, 5)
    heatmap = _field(size, slopes=(0.1, 0.2, 0.05), offset=0.0)
    back = scan_map(heatmap, fit_volume_view(shape, size), shape)
    centres = [(np.arange(n) + 0.5) * m / n for n, m in zip(shape, size)]
    expected = sum(s * g for s, g in zip((0.1, 0.2, 0.05), np.meshgrid(*centres, indexing="ij")))
    inner = tuple(slice(n // m, n - n // m) for n, m in zip(shape, size))
    assert back.shape == shape
    assert np.allclose(back[inner], expected[inner], atol=1e-5)


def test_letterbox_keeps_proportions_and_pads_with_zero():
    view = fit_volume_view((20, 10, 10), (8, 8, 8), "letterbox")
    assert view.seen == ((0, 20), (0, 10), (0, 10))
    assert view.placed == ((0.0, 1.0), (0.25, 0.75), (0.25, 0.75))  # 10 voxels at 8/20 per voxel: 4 of 8
    fitted = fitted_volume(np.full((20, 10, 10), 100, np.float32), (8, 8, 8), view)
    assert np.all(fitted[:, 2:6, 2:6] == 100)
    assert np.all(fitted[:, :2] == 0) and np.all(fitted[:, 6:] == 0) and np.all(fitted[:, :, :2] == 0)
    # Only the placed part is put back (its edge voxels blend with the padding, as in 2-D).
    heatmap = np.zeros((8, 8, 8), np.float32)
    heatmap[:, 2:6, 2:6] = 1.0
    assert np.allclose(scan_map(heatmap, view, (20, 10, 10))[:, 1:-1, 1:-1], 1.0)


def test_crop_keeps_the_centre_and_the_rest_of_the_scan_gets_no_map():
    view = fit_volume_view((20, 10, 10), (8, 8, 8), "crop")
    assert view.seen == ((5.0, 15.0), (0.0, 10.0), (0.0, 10.0))
    back = scan_map(np.ones((8, 8, 8), np.float32), view, (20, 10, 10))
    assert np.all(back[5:15] == 1.0)
    assert np.all(back[:5] == 0) and np.all(back[15:] == 0)


def test_an_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="unknown resize mode"):
        fit_volume_view((4, 4, 4), (2, 2, 2), "squash")
