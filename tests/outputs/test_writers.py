"""Writing files (_outputs/writers.py): the PNG encoder, drawings written strip by strip, lossy formats, leftovers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (40, 33, 3), (1, 9), (12, 4)])
def test_png_encoder_round_trips_through_pillow(shape, tmp_path):
    from xaicli._outputs.writers import encode_png, write_image

    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(decoded), pixels)
    if len(shape) == 3:
        write_image(tmp_path / "x.png", pixels)
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), pixels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_format", ["png", "jpeg", "webp"])
def test_a_drawing_written_strip_by_strip_is_the_whole_picture(channels, image_format, tmp_path):
    """Outputs are encoded as their strips are drawn (one IDAT chunk each for PNG); the file
    must hold the same picture as one written whole, with the Up filter carried across strips."""
    from xaicli._outputs.writers import write_image
    from xaicli._outputs.render import Drawing

    shape = (23, 17, 3) if channels == 3 else (23, 17)
    whole = np.random.default_rng(channels).integers(0, 256, shape, dtype=np.uint8)
    strips = [whole[:1], whole[1:9], whole[9:10], whole[10:]]
    write_image(tmp_path / "strips", Drawing(23, 17, channels, iter(strips)), image_format)
    write_image(tmp_path / "whole", whole, image_format)
    mode = "RGB" if channels == 3 else "L"  # WebP stores grayscale as RGB
    from_strips, from_whole = (np.asarray(Image.open(tmp_path / name).convert(mode)) for name in ("strips", "whole"))
    assert from_strips.shape == shape
    np.testing.assert_array_equal(from_strips, whole if image_format == "png" else from_whole)


def test_drawn_outputs_are_their_strips_put_together():
    """A 24-MP output is drawn a strip of rows at a time; at a width that makes many strips,
    the overlay, heatmap and panel equal the same pictures drawn from a numpy original."""
    from xaicli._inputs.geometry import fit_view
    from xaicli._outputs.render import draw_overlay, heatmap_image, jet_lut, overlay, panel, strip_rows

    width = 4000  # strips of a few rows
    image = np.random.default_rng(3).integers(0, 256, (3 * strip_rows(width) + 5, width, 3), dtype=np.uint8)
    heatmap = np.random.default_rng(4).uniform(0, 1, (7, 7)).astype(np.float32)
    view = fit_view(image.shape[:2], (28, 28), "crop")  # unseen columns at both sides
    picture = Image.fromarray(image)
    drawn = draw_overlay(picture, heatmap, 0.4, jet_lut(), view).pixels()
    np.testing.assert_array_equal(drawn, overlay(image, heatmap, 0.4, jet_lut(), view))
    left = int(view.seen[0]) - 1
    np.testing.assert_array_equal(drawn[:, left], image[:, left])  # unseen: the photo as it is
    whole_panel = panel(picture, heatmap, 0.4, jet_lut(), "cat 0.93 | gradcam", view)
    assert whole_panel.shape == (image.shape[0] + max(16, image.shape[0] // 10), 3 * width, 3)
    np.testing.assert_array_equal(whole_panel[:image.shape[0], 2 * width:], drawn)
    np.testing.assert_array_equal(whole_panel[:image.shape[0], :width], image)
    caption = whole_panel[image.shape[0]:]
    assert caption[:, :200].min() < 64 and caption[:, 200:].min() == 255  # dark text at the left only
    gray = heatmap_image(heatmap, image.shape[:2], view)
    assert gray.shape == image.shape[:2] and gray[:, left].max() == 0


@pytest.mark.parametrize("image_format,mean_difference", [("jpeg", 4.0), ("webp", 5.0)])
def test_lossy_formats_decode_to_the_same_size_and_close_to_the_png(image_format, mean_difference):
    from xaicli._outputs.writers import encode_image
    from xaicli._outputs.render import jet_lut, overlay

    from ..conftest import REPO

    photo = np.asarray(Image.open(REPO / "sample_images" / "photos" / "chelsea_cat.jpg").convert("RGB"))[:90, :70]
    heatmap = np.random.default_rng(2).uniform(0, 1, (7, 7)).astype(np.float32)
    pixels = overlay(photo, heatmap, 0.4, jet_lut())
    lossless = np.asarray(Image.open(io.BytesIO(encode_image(pixels, "png"))))
    np.testing.assert_array_equal(lossless, pixels)
    decoded = Image.open(io.BytesIO(encode_image(pixels, image_format)))
    assert decoded.format == {"jpeg": "JPEG", "webp": "WEBP"}[image_format] and decoded.size == (70, 90)
    assert np.abs(np.asarray(decoded.convert("RGB"), float) - pixels).mean() < mean_difference
    gray = Image.open(io.BytesIO(encode_image(pixels[..., 0], image_format)))
    assert gray.size == (70, 90)


def test_a_complete_run_removes_what_killed_writers_left(tmp_path):
    from xaicli._outputs.writers import remove_temporary_files

    folder = tmp_path / "out"
    folder.mkdir()
    names = [".a.png.4242.139716262840000.tmp", "a.png", ".hidden", "x.tmp", ".b.npy.1.2.tmp.keep"]
    for name in names:
        (folder / name).write_bytes(b"x")
    (folder / ".sub.7.7.tmp").mkdir()  # a folder, whatever its name, stays
    assert remove_temporary_files([folder, tmp_path / "missing"]) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(names[1:] + [".sub.7.7.tmp"])
