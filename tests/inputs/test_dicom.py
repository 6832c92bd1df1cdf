"""DICOM files written here with pydicom: rescaled CT with its window, MONOCHROME1, colour, several
frames, RLE compression, and files that cannot be used; pixel values checked by hand. No
TensorFlow: the pipeline's part is in test_cli.py."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid  # noqa: E402

from xaicli._errors import ImageError  # noqa: E402
from xaicli._inputs.raster import decode_bytes, read_image  # noqa: E402
from xaicli._inputs.intensity import Intensity  # noqa: E402

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_dicom(path, pixels, interpretation="MONOCHROME2", bits=12, compress=False, **tags):
    """A minimal DICOM file of ``pixels`` ((H, W), (F, H, W) or (H, W, 3)) with ``tags``."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = CT_IMAGE_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate = "Doe^Jane", "PID-7731", "19610412"
    dataset.set_pixel_data(pixels, interpretation, bits)
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    if compress:
        dataset.compress(RLELossless)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _ct(tmp_path, **tags):
    # stored 0, 1000, 1040, 1240, 2000 with slope 1, intercept -1024: -1024, -24, 16, 216, 976 HU
    stored = np.array([[0, 1000, 1040, 1240, 2000]], np.uint16)
    return write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, **tags)


def test_ct_is_rescaled_to_hounsfield_units_and_shown_through_its_own_window(tmp_path):
    # window 40,400 in HU: 0 up to -160, 255 above 239, ((hu - 39.5) / 399 + 0.5) * 255 between
    image, note = read_image(_ct(tmp_path, WindowCenter=40, WindowWidth=400))
    assert image[..., 0].tolist() == [[0, 87, 112, 240, 255]]  # -24 -> 86.9, 16 -> 112.5, 216 -> 240.3
    assert note == "intensity: window 40,400" and (image[..., 0] == image[..., 2]).all()


def test_the_first_of_several_windows_is_taken_and_a_chosen_window_wins(tmp_path):
    path = _ct(tmp_path, WindowCenter=[40, 400], WindowWidth=[400, 2000])
    assert read_image(path)[1] == "intensity: window 40,400"
    image, note = read_image(path, intensity=Intensity("window", 500, 1000))  # bone-ish, in HU
    assert note == "intensity: window 500,1000" and image[0, 4, 0] == round(((976 - 499.5) / 999 + 0.5) * 255)


def test_without_a_window_auto_stretches_the_rescaled_range(tmp_path):
    image, note = read_image(_ct(tmp_path))
    assert image[0, [0, 4], 0].tolist() == [0, 255] and note == "intensity: minmax (-1024..976 to 0..255)"


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100, 200]], np.uint16)
    image, note = read_image(write_dicom(tmp_path / "xray.dcm", stored, "MONOCHROME1"))
    assert image[..., 0].tolist() == [[255, 127, 0]]  # 255 - minmax (0, 128, 255)
    assert note.endswith("inverted (MONOCHROME1)")


def test_eight_bit_grayscale_without_a_window_is_shown_as_it_is(tmp_path):
    stored = np.array([[3, 90, 200]], np.uint8)
    image, note = read_image(write_dicom(tmp_path / "us.dcm", stored, bits=8))
    assert image[..., 0].tolist() == [[3, 90, 200]] and note == ""


def test_colour_dicom_is_rgb(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[1, :, 2] = 200, 50
    image, note = read_image(write_dicom(tmp_path / "derm.dcm", rgb, "RGB", bits=8))
    np.testing.assert_array_equal(image, rgb)
    assert note == ""


def test_several_frames_explain_the_first_and_say_so(tmp_path):
    frames = np.stack([np.full((4, 5), value, np.uint16) for value in (0, 500, 1000)])
    frames[0, 0, 0] = 1000  # contrast in the first frame
    image, note = read_image(write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=3))
    assert image.shape == (4, 5, 3) and image[0, 0, 0] == 255 and image[1, 1, 0] == 0
    assert note.startswith("multi-frame DICOM: explained its first frame of 3")


def test_rle_compressed_pixels_decode_to_the_same_picture(tmp_path):
    stored = np.arange(60, dtype=np.uint16).reshape(6, 10) * 50
    plain = read_image(write_dicom(tmp_path / "plain.dcm", stored))[0]
    packed = read_image(write_dicom(tmp_path / "packed.dcm", stored, compress=True))[0]
    np.testing.assert_array_equal(packed, plain)


def test_files_that_cannot_be_used_are_one_line_errors(tmp_path):
    no_pixels = tmp_path / "report.dcm"
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.SOPInstanceUID = CT_IMAGE_STORAGE, generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(no_pixels, enforce_file_format=True)
    whole = _ct(tmp_path).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[:-6])
    (tmp_path / "fake.dcm").write_bytes(b"just some text, not DICOM")
    reasons = {}
    for name in ("report.dcm", "cut.dcm", "fake.dcm"):
        with pytest.raises(ImageError) as error:
            read_image(tmp_path / name)
        reasons[name] = str(error.value)
        assert "\n" not in reasons[name]
    assert "no pixel data" in reasons["report.dcm"]
    assert "pixel data" in reasons["cut.dcm"]
    assert "not a DICOM file" in reasons["fake.dcm"]


def test_the_memory_estimate_comes_from_the_header(tmp_path):
    frames = np.zeros((3, 4, 5), np.uint16)
    assert decode_bytes(write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=3)) == 60 * 17


def test_without_pydicom_a_dicom_file_is_an_error_row_naming_the_extra(tmp_path, monkeypatch):
    path = _ct(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "pydicom", None)  # as if not installed
    with pytest.raises(ImageError, match=r"needs pydicom: pip install 'xaicli\[medical\]'"):
        read_image(path)


def _jpeg_extended_12_bit():
    """pydicom's own 12-bit JPEG Extended (Process 2 and 4) test file, which ships inside its
    wheel; pylibjpeg-libjpeg and Pillow refuse it, and pydicom's GDCM plugin takes no 12-bit
    JPEG Extended."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("JPEG-lossy.dcm"))


def test_12_bit_jpeg_extended_decodes_through_gdcm():
    pytest.importorskip("gdcm")
    from xaicli._inputs.dicom import read_dicom

    pixels = read_dicom(_jpeg_extended_12_bit())
    assert pixels.frames.shape == (1, 1024, 256)
    # the values pydicom's own tests of this file expect from GDCM
    assert pixels.frames[0, 420, 140] == 244 and pixels.frames[0, 230, 120] == 95
    assert read_image(_jpeg_extended_12_bit())[0].shape[:2] == (1024, 256)  # and on to a picture


def test_without_gdcm_the_error_names_the_decoders_tried_and_only_what_is_missing(monkeypatch):
    from pydicom.pixels import get_decoder

    path = _jpeg_extended_12_bit()
    decoder = get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    monkeypatch.setitem(__import__("sys").modules, "gdcm", None)  # as if python-gdcm were not installed
    monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k != "gdcm"})
    monkeypatch.setattr(decoder, "_unavailable", {**decoder._unavailable, "gdcm": ("gdcm>=3.0.10",)})
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gdcm" else found(name, *a))
    with pytest.raises(ImageError) as raised:
        read_image(path)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("cannot decode this DICOM's compression (JPEG Extended (Process 2 and 4)): tried ")
    assert "pylibjpeg (libjpeg error" in message and "pillow (" in message  # each decoder and why it failed
    assert message.endswith("; not installed: python-gdcm (pip install python-gdcm)")
    assert "pylibjpeg-libjpeg" not in message  # installed: not asked for
