"""Reading image files to upright RGB pictures (_inputs/raster.py): modes, depth, EXIF, bad bytes, the pixel limit."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from xaicli._errors import ImageError
from xaicli._inputs.raster import read_image


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _encoded(array: np.ndarray, mode: str, image_format: str) -> bytes | None:
    buffer = io.BytesIO()
    try:
        Image.fromarray(array).convert(mode).save(buffer, image_format)
    except (OSError, ValueError, KeyError):
        return None  # a mode the format cannot store
    return buffer.getvalue()


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


def test_read_image_turns_any_decoder_failure_into_an_image_error(tmp_path, monkeypatch):
    # Pillow's decoders and EXIF handling raise assorted types (ZeroDivisionError, struct.error,
    # IndexError) on malformed files; each must become a per-image error, not end the run.
    path = _save(tmp_path / "ok.png", np.zeros((2, 2, 3), np.uint8))

    def broken_exif(_image, **_options):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("xaicli._inputs.raster.ImageOps.exif_transpose", broken_exif)
    with pytest.raises(ImageError, match="cannot decode image: division by zero"):
        read_image(path)


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
