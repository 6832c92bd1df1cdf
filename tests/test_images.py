"""images.py: discovery, decoding and preprocessing, without TensorFlow."""

import io
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from xaicli._errors import ImageError, UsageError
from xaicli._inputs.discover import discover
from xaicli._inputs.geometry import View, fit_view, to_model_input
from xaicli._inputs.raster import read_image
from xaicli._inputs.scaling import PRESETS


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_discover_is_recursive_sorted_and_case_insensitive(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    for name in ["b.PNG", "a.jpeg", "sub/z.Tif", "sub/deeper/c.bmp", "d.gif", "e.webp"]:
        _save(tmp_path / name, pixel)
    (tmp_path / "readme.md").write_text("x")
    items = discover([tmp_path])
    assert [str(i.relative) for i in items] == [
        "a.jpeg", "b.PNG", "d.gif", "e.webp", "sub/deeper/c.bmp", "sub/z.Tif"]
    assert all(i.path.exists() for i in items)


def test_discover_mixes_files_and_folders_without_collisions(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "one" / "x.png", pixel)
    _save(tmp_path / "two" / "x.png", pixel)
    single = _save(tmp_path / "three" / "y.png", pixel)
    items = discover([tmp_path / "one", tmp_path / "two", single, tmp_path / "one"])
    assert [str(i.relative) for i in items] == ["one/x.png", "three/y.png", "two/x.png"]


def test_discover_skips_the_output_folder_inside_the_inputs(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "a.png", pixel)
    _save(tmp_path / "out" / "a.png.gradcam.png", pixel)
    assert [str(i.relative) for i in discover([tmp_path], exclude=[tmp_path / "out"])] == ["a.png"]


def test_discover_single_file_keeps_its_name(tmp_path):
    path = _save(tmp_path / "pics" / "cat.jpg", np.zeros((2, 2, 3), np.uint8))
    assert next(discover([path])).relative == PurePosixPath("cat.jpg")


def test_discover_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="input not found"):
        discover([tmp_path / "nope"])


@pytest.mark.parametrize("mode,array", [
    ("L", np.full((3, 4), 77, np.uint8)),
    ("RGBA", np.full((3, 4, 4), 77, np.uint8)),
    ("LA", np.full((3, 4, 2), 77, np.uint8)),
])
def test_read_image_converts_modes_to_rgb(tmp_path, mode, array):
    path = _save(tmp_path / f"x_{mode}.png", array)
    image = read_image(path)[0]
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8
    assert np.all(image == 77)


def test_read_image_scales_16_bit_grayscale_by_its_range_when_asked(tmp_path):
    from xaicli._inputs.intensity import Intensity

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((2, 3), 65535, np.uint16)).save(path)
    assert np.all(read_image(path, intensity=Intensity("range"))[0] == 255)
    assert np.all(read_image(path)[0] == 0)  # auto stretches the image's own range: a flat one has no contrast


def test_decode_bytes_counts_what_decoding_holds_from_the_header_alone(tmp_path):
    """The memory budget admits a decode by this estimate: Pillow's 4 bytes a pixel for colour,
    twice that for a photo EXIF says to turn, plus the RGB picture for other modes."""
    from xaicli._inputs.raster import decode_bytes

    Image.new("RGB", (10, 20)).save(tmp_path / "upright.jpg")
    turned = Image.new("RGB", (10, 20))
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "turned.jpg", exif=exif)
    Image.new("L", (10, 20)).save(tmp_path / "gray.png")
    Image.new("I;16", (10, 20)).save(tmp_path / "deep.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert [decode_bytes(tmp_path / name) // 200 for name in ("upright.jpg", "turned.jpg", "gray.png", "deep.png")] \
        == [4, 8, 5, 18]
    assert decode_bytes(tmp_path / "broken.png") == 0


def test_read_image_applies_exif_orientation(tmp_path):
    array = np.zeros((2, 4, 3), np.uint8)  # 4 wide, 2 high
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert read_image(path)[0].shape == (4, 2, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "not a readable image"),
    (b"hello, I am text", "not a readable image"),
])
def test_read_image_rejects_non_images_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        read_image(path)


def test_read_image_rejects_truncated_png(tmp_path):
    path = _save(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(cut)


def test_read_image_enforces_pixel_limit(tmp_path):
    path = _save(tmp_path / "big.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ImageError, match="over the limit of 99"):
        read_image(path, max_pixels=99)


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


def test_to_model_input_resizes_and_converts_channels():
    image = np.zeros((40, 30, 3), np.uint8)
    image[..., 0] = 255  # pure red: luma 0.299 * 255
    rgb = to_model_input(image, (8, 6), 3, PRESETS["unit"])
    gray = to_model_input(image, (8, 6), 1, PRESETS["none"])
    assert rgb.shape == (8, 6, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])
    assert gray.shape == (8, 6, 1) and abs(gray[0, 0, 0] - 76) <= 1


def test_read_image_turns_any_decoder_failure_into_an_image_error(tmp_path, monkeypatch):
    # Pillow's decoders and EXIF handling raise assorted types (ZeroDivisionError, struct.error,
    # IndexError) on malformed files; each must become a per-image error, not end the run.
    path = _save(tmp_path / "ok.png", np.zeros((2, 2, 3), np.uint8))

    def broken_exif(_image, **_options):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("xaicli._inputs.raster.ImageOps.exif_transpose", broken_exif)
    with pytest.raises(ImageError, match="cannot decode image: division by zero"):
        read_image(path)


def test_relative_paths_never_climb_out_of_the_output_tree(tmp_path, monkeypatch):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "a" / "x.png", pixel)
    _save(tmp_path / "b" / "y.png", pixel)
    monkeypatch.chdir(tmp_path / "a")
    items = discover([Path("../a/../b"), Path("x.png")])
    assert [str(i.relative) for i in items] == ["a/x.png", "b/y.png"]
    assert all(".." not in i.relative.parts for i in items)


def test_custom_scaling_against_hand_computed_values():
    from xaicli._inputs.scaling import custom_scaling

    scaled = custom_scaling([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])(PIXEL)[0, 0]
    # (0/255 - 0.5)/0.5 = -1; (127.5/255 - 0.25)/0.25 = 1; (255/255 - 0)/2 = 0.5
    np.testing.assert_allclose(scaled, [-1.0, 1.0, 0.5], rtol=1e-6)


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


def _encoded(array: np.ndarray, mode: str, image_format: str) -> bytes | None:
    buffer = io.BytesIO()
    try:
        Image.fromarray(array).convert(mode).save(buffer, image_format)
    except (OSError, ValueError, KeyError):
        return None  # a mode the format cannot store
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it skips
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.builds(
            _encoded,
            hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))),
            st.sampled_from(["RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "I", "F", "I;16"]),
            st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
        ),
    ),
    cut=st.one_of(st.none(), st.integers(0, 400)),
)
def test_loader_returns_an_rgb_image_or_its_own_error_for_any_bytes(tmp_path, data, cut):
    """Random bytes, and real small images of every mode and format, whole or cut short."""
    if data is None:
        return
    path = tmp_path / "input.img"
    path.write_bytes(data if cut is None else data[:cut])
    try:
        image, _note = read_image(path, max_pixels=100_000)
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
