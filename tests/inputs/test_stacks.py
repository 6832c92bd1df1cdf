"""Files of several images, without TensorFlow: NIfTI volumes written here with nibabel (one
stored in another orientation, to prove the turn to RAS), multi-frame and compressed DICOM,
slice choices, suffix-less DICOM found by its preamble, and the mosaic's grid. Orientation and
intensities are checked by hand; the pipeline's part is in test_cli.py."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from xaicli._budget import MemoryBudget  # noqa: E402
from xaicli._errors import ImageError, UsageError  # noqa: E402
from xaicli._inputs.discover import InputImage, Part, discover, is_dicom, is_image_name
from xaicli._inputs.raster import read_image  # noqa: E402
from xaicli._inputs.intensity import Intensity  # noqa: E402
from xaicli._outputs.mosaic import GAP, compose, tile_size  # noqa: E402
from xaicli._inputs.nifti import read_volume, slices_of  # noqa: E402
from xaicli._inputs.stacks import SliceChoice, StackCache, parse_slices, read_stack  # noqa: E402

from .test_dicom import write_dicom  # noqa: E402

I, J, K = 5, 4, 3  # voxels towards the subject's right, anterior, superior


def ras_volume() -> np.ndarray:
    """(I, J, K) int16 with each voxel's value telling where it is: 100 i + 10 j + k + 1."""
    i, j, k = np.meshgrid(np.arange(I), np.arange(J), np.arange(K), indexing="ij")
    return (100 * i + 10 * j + k + 1).astype(np.int16)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nibabel.Nifti1Image(data, np.eye(4) if affine is None else affine).to_filename(path)
    return path


def stored_otherwise(tmp_path: Path) -> Path:
    """The same voxels stored as (K, I, J) with i reversed: stored[a, b, c] = ras[I-1-b, c, a],
    and the affine that says so (axis 0 superior, axis 1 towards the left, axis 2 anterior)."""
    stored = np.transpose(ras_volume()[::-1, :, :], (2, 0, 1))
    affine = np.array([[0, -1, 0, I - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    assert nibabel.aff2axcodes(affine) == ("S", "L", "A")
    return write_nifti(tmp_path / "sla.nii.gz", stored, affine)


def test_a_volume_stored_in_another_orientation_reads_as_ras(tmp_path):
    plain = read_volume(write_nifti(tmp_path / "ras.nii", ras_volume())).values
    turned = read_volume(stored_otherwise(tmp_path)).values
    np.testing.assert_array_equal(plain, ras_volume())
    np.testing.assert_array_equal(turned, ras_volume())


def test_slices_are_oriented_as_radiology_viewers_show_them():
    volume = ras_volume()
    axial = slices_of(volume, "axial")  # (K, J, I): anterior at the top, the subject's right on the left
    assert axial.shape == (K, J, I)
    assert axial[1, 0, 0] == 100 * (I - 1) + 10 * (J - 1) + 1 + 1  # top left: rightmost, most anterior
    assert axial[1, J - 1, I - 1] == 0 + 0 + 1 + 1  # bottom right: leftmost, most posterior
    coronal = slices_of(volume, "coronal")  # (J, K, I): superior at the top, right on the left
    assert coronal.shape == (J, K, I) and coronal[2, 0, 0] == 100 * (I - 1) + 10 * 2 + (K - 1) + 1
    sagittal = slices_of(volume, "sagittal")  # (I, K, J): superior at the top, anterior on the left
    assert sagittal.shape == (I, K, J) and sagittal[3, 0, 0] == 100 * 3 + 10 * (J - 1) + (K - 1) + 1
    assert sagittal[3, K - 1, J - 1] == 100 * 3 + 1


def test_a_stack_maps_the_whole_volume_at_once_and_numbers_slices_by_voxel(tmp_path):
    volume = ras_volume()
    volume[:, :, 0] = 0  # an empty bottom slice
    stack = read_stack(write_nifti(tmp_path / "v.nii.gz", volume), Intensity("minmax"))
    low, high = 0, int(volume.max())
    assert stack.note == f"intensity: minmax ({low}..{high} to 0..255)"
    expected = np.rint(slices_of(volume, "axial").astype(np.float64) / high * 255)
    np.testing.assert_array_equal(stack.pictures, expected.astype(np.uint8))
    assert (stack.axis, stack.first) == ("z", 0)
    assert stack.chosen(SliceChoice("nonzero")) == [1, 2]
    assert stack.chosen(SliceChoice("all")) == [0, 1, 2]
    assert stack.chosen(SliceChoice("middle")) == [1]
    assert stack.chosen(SliceChoice("range", 2, 9)) == [2]
    with pytest.raises(ImageError, match=r"--slices 5:9 holds none of this file's slices \(z=0..2\)"):
        stack.chosen(SliceChoice("range", 5, 9))
    picture = np.asarray(stack.picture(2))
    assert picture.shape == (J, I, 3) and (picture[..., 0] == expected[2]).all()


def test_eight_bit_volumes_are_shown_as_they_are_and_other_axes_cut_the_same_voxels(tmp_path):
    volume = (ras_volume() % 256).astype(np.uint8)
    path = write_nifti(tmp_path / "v.nii", volume)
    stack = read_stack(path, Intensity("auto"), "sagittal")
    assert stack.note == "" and stack.axis == "x"
    np.testing.assert_array_equal(stack.pictures, slices_of(volume, "sagittal"))


def test_a_4d_file_gives_its_first_volume_and_says_so(tmp_path):
    series = np.stack([ras_volume(), ras_volume() * 0], axis=-1)
    volume = read_volume(write_nifti(tmp_path / "fmri.nii.gz", series))
    np.testing.assert_array_equal(volume.values, ras_volume())
    assert volume.note == "4-D volume: explained its first volume of 2"


def test_volumes_that_cannot_be_used_are_one_line_errors(tmp_path):
    flat = write_nifti(tmp_path / "flat.nii", np.ones((4, 5), np.int16))
    five = write_nifti(tmp_path / "five.nii", np.ones((2, 2, 2, 2, 2), np.int16))
    holes = ras_volume().astype(np.float32)
    holes[1, 1, 1] = np.nan
    nan = write_nifti(tmp_path / "nan.nii.gz", holes)
    noise = np.random.default_rng(1).integers(0, 4000, (32, 32, 32)).astype(np.int16)  # gzip cannot shrink it much
    whole = write_nifti(tmp_path / "whole.nii.gz", noise).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"not a volume at all" * 30)
    expected = {flat: "must be 3-D or 4-D; this one is 2-D (4, 5)", five: "this one is 5-D",
                nan: "1 non-finite voxels (NaN or inf)", cut: "cut short", fake: "not a NIfTI file"}
    for path, reason in expected.items():
        with pytest.raises(ImageError) as error:
            read_volume(path)
        assert reason in str(error.value) and "\n" not in str(error.value), path.name


def test_multi_frame_dicom_frames_are_mapped_together_and_counted_from_one(tmp_path):
    frames = np.stack([np.full((4, 5), value, np.uint16) for value in (0, 500, 1000)])
    stack = read_stack(write_dicom(tmp_path / "cine.dcm", frames, NumberOfFrames=3), Intensity("auto"))
    assert (stack.axis, stack.first) == ("frame", 1)
    assert [int(stack.pictures[n, 0, 0]) for n in range(3)] == [0, 128, 255]  # one minmax for all frames
    assert stack.chosen(SliceChoice("nonzero")) == [2, 3]  # frame 1 holds only zeros
    assert np.asarray(stack.picture(3))[0, 0].tolist() == [255, 255, 255]


def test_jpeg_compressed_dicom_decodes_through_the_plugins(tmp_path):
    """JPEG baseline (lossy, decoded by pylibjpeg-libjpeg) equals Pillow's decode of the same
    bytes; JPEG 2000 lossless (pylibjpeg-openjpeg) equals the uncompressed file exactly."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    rng = np.random.default_rng(5)
    gray = np.clip(rng.normal(120, 40, (16, 24)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "JPEG", quality=90)
    path = write_dicom(tmp_path / "jpeg.dcm", gray, bits=8)
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.save_as(path, enforce_file_format=True)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert np.abs(read_image(path)[0][..., 0].astype(int) - decoded).max() <= 1  # two IDCTs may round apart

    stored = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)  # openjpeg wants 2^levels pixels
    plain = read_image(write_dicom(tmp_path / "plain.dcm", stored))[0]
    packed = write_dicom(tmp_path / "j2k.dcm", stored)
    dataset = pydicom.dcmread(packed)
    dataset.compress(JPEG2000Lossless)
    dataset.save_as(packed, enforce_file_format=True)
    np.testing.assert_array_equal(read_image(packed)[0], plain)


def test_dicom_files_without_a_suffix_are_found_by_their_preamble_with_dicom(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    write_dicom(folder / "1.2.840.113619.2.55.3", np.ones((4, 4), np.uint16))
    (folder / "notes").write_text("not DICOM")
    (folder / "a.png").write_bytes(b"")
    assert [i.path.name for i in discover([folder])] == ["a.png"]
    assert [i.path.name for i in discover([folder], dicom=True)] == ["1.2.840.113619.2.55.3", "a.png"]
    assert is_dicom(folder / "1.2.840.113619.2.55.3") and not is_dicom(folder / "notes")
    assert read_image(folder / "1.2.840.113619.2.55.3")[0].shape == (4, 4, 3)
    assert is_image_name("BRAIN.NII.GZ") and is_image_name("x.nii") and not is_image_name("x.gz")


def test_parts_are_named_in_the_table_and_in_file_names():
    item = InputImage(Path("scans/vol.nii.gz"), PurePosixPath("vol.nii.gz"), Part("z", 42, 0, 80))
    assert item.name == "scans/vol.nii.gz#z=42" and str(item.output_relative) == "vol.nii.gz.z042"
    frame = InputImage(Path("cine.dcm"), PurePosixPath("a/cine.dcm"), Part("frame", 3, 2, 3, digits=4))
    assert frame.name == "cine.dcm#frame=3" and str(frame.output_relative) == "a/cine.dcm.f0003"


def test_slice_choices_parse_or_say_what_to_give():
    assert parse_slices(" Middle ") == SliceChoice("middle")
    assert parse_slices("40:80") == SliceChoice("range", 40, 80)
    for bad in ("80:40", "3", "a:b", "-1:4", "every"):
        with pytest.raises(UsageError, match="give nonzero, all, middle or A:B"):
            parse_slices(bad)


def test_the_cache_splits_files_into_parts_and_lets_go_of_a_stack_after_its_last_part(tmp_path):
    volume = ras_volume()
    volume[:, :, 0] = 0
    budget = MemoryBudget(64 << 20)
    cache = StackCache(budget, Intensity("auto"), SliceChoice("nonzero"))
    path = write_nifti(tmp_path / "v.nii.gz", volume)
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros((2, 2, 2), np.int16))
    other = tmp_path / "photo.png"
    items = [InputImage(p, PurePosixPath(p.name)) for p in (empty, other, path)]
    split = list(cache.split(items))
    assert [(i.path.name, i.part.label if i.part else "", i.error[:30]) for i in split] == [
        ("empty.nii.gz", "", "every slice holds only zeros; "), ("photo.png", "", ""),
        ("v.nii.gz", "z=1", ""), ("v.nii.gz", "z=2", "")]
    assert [(i.part.position, i.part.count) for i in split[2:]] == [(0, 2), (1, 2)]
    assert budget.kept == I * J * K  # the 8-bit stack, held
    picture, note = cache.picture(split[3])
    assert picture.size == (I, J) and note.startswith("intensity: minmax")
    cache.done(split[2])
    assert budget.kept == I * J * K
    cache.done(split[3])
    assert budget.kept == 0


def test_the_mosaic_puts_tiles_in_a_square_grid_with_failed_ones_dark():
    tiles = [np.full((10, 20, 3), 200 + n, np.uint8) for n in range(4)] + [None]
    grid = compose([f"z={n}" for n in range(5)], tiles)
    assert grid.shape == (2 * (10 + GAP) + GAP, 3 * (20 + GAP) + GAP, 3)
    fourth = grid[GAP + 10 + GAP + 9, GAP + 19]  # the fourth tile (second row, first column), bottom right
    assert fourth.tolist() == [200 + 3] * 3
    failed = grid[GAP + 10 + GAP + 9, GAP + 20 + GAP + 19]
    assert failed.tolist() == [48] * 3
    assert tile_size((512, 256), 4) == (256, 128) and tile_size((40, 30), 4) == (128, 96)
    assert tile_size((256, 256), 400) == (202, 202)  # 20 columns within 4096 pixels


def test_without_nibabel_a_volume_is_an_error_naming_the_extra(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "v.nii.gz", ras_volume())
    monkeypatch.setitem(__import__("sys").modules, "nibabel", None)  # as if not installed
    with pytest.raises(ImageError, match=r"needs nibabel: pip install 'xaicli\[medical\]'"):
        read_volume(path)
