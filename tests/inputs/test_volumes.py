"""`xai run` on files of several images: NIfTI volumes slice by slice and multi-frame DICOM
frame by frame, their rows, file names and mosaics, files that cannot be used, suffix-less
DICOM with --dicom, and --skip-existing / --resume taking a volume as a whole."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xaicli._outputs.mosaic import GAP, grid_columns, tile_size

nibabel = pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

from .test_dicom import write_dicom  # noqa: E402
from ..conftest import xai

SLICE = (24, 32)  # (rows, columns) of an axial slice below: J anterior-posterior, I right-left


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _volume(folder: Path, name: str = "brain.nii.gz", empty: tuple[int, ...] = (0, 5)) -> Path:
    """A 6-slice (I=32, J=24, K=6) volume stored left-posterior-inferior first (LPI: both in-plane
    axes reversed), with slices ``empty`` all zeros."""
    rng = np.random.default_rng(2)
    ras = rng.integers(100, 3000, (SLICE[1], SLICE[0], 6)).astype(np.int16)
    ras[:, :, list(empty)] = 0
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    affine[:3, 3] = [SLICE[1] - 1, SLICE[0] - 1, 0]
    nibabel.Nifti1Image(ras[::-1, ::-1, :], affine).to_filename(folder / name)
    return folder / name


def test_a_volume_is_explained_slice_by_slice_with_a_mosaic(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _volume(scans)
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out, "--save", "overlay,raw")
    assert result.exit_code == 0, result.output
    assert "4 of 4 images explained" in result.output  # the empty slices 0 and 5 are left out
    rows = _rows(out)
    assert [row["input"] for row in rows] == [f"{scans / 'brain.nii.gz'}#z={k}" for k in range(1, 5)]
    highest = int(np.asanyarray(nibabel.load(scans / "brain.nii.gz").dataobj).max())
    assert {row["note"] for row in rows} == {f"intensity: minmax (0..{highest} to 0..255)"}  # the volume's range
    for k in range(1, 5):
        overlay = Image.open(out / f"brain.nii.gz.z00{k}.gradcam.png")
        assert overlay.size == (SLICE[1], SLICE[0])  # width I, height J: an axial slice
        assert (out / f"brain.nii.gz.z00{k}.gradcam.npy").exists()
    tile_height, tile_width = tile_size(SLICE, 4)
    columns = grid_columns(4)
    mosaic = Image.open(out / "brain.nii.gz.gradcam.mosaic.png")
    assert mosaic.size == (columns * (tile_width + GAP) + GAP, 2 * (tile_height + GAP) + GAP)
    options = json.loads((out / "run.json").read_text())["options"]
    assert (options["slices"], options["slice_axis"]) == ("nonzero", "axial")


def test_slice_choices_and_axes_pick_the_rows(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _volume(scans)
    cases = {("--slices", "middle"): ["z=3"], ("--slices", "all"): [f"z={k}" for k in range(6)],
             ("--slices", "4:99"): ["z=4", "z=5"], ("--slice-axis", "sagittal", "--slices", "30:40"): ["x=30", "x=31"]}
    for number, (options, expected) in enumerate(cases.items()):
        out = tmp_path / f"out{number}"
        result = xai("run", tiny_model, scans, "-o", out, "-q", *options)
        assert result.exit_code == 0, result.output
        assert [row["input"].rsplit("#", 1)[1] for row in _rows(out)] == expected
    sagittal = Image.open(tmp_path / "out3" / "brain.nii.gz.x030.gradcam.png")
    assert sagittal.size == (SLICE[0], 6)  # anterior-posterior across, superior-inferior down
    bad = xai("run", tiny_model, scans, "-o", tmp_path / "bad", "--slices", "9:2")
    assert bad.exit_code == 2 and "--slices" in bad.output


def test_multi_frame_dicom_gives_one_row_per_frame_and_no_patient_data_anywhere(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    frames = (np.arange(3 * 24 * 32).reshape(3, 24, 32) % 1500).astype(np.uint16)
    write_dicom(scans / "cine.dcm", frames, NumberOfFrames=3)
    write_dicom(scans / "1.2.826.0.1.3680043.8.498.1", frames[0])  # a scanner's suffix-less file name
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out, "--dicom", "--save", "overlay,heatmap,raw,panel", "-q")
    assert result.exit_code == 0, result.output
    inputs = [Path(row["input"]).name for row in _rows(out)]
    assert inputs == ["1.2.826.0.1.3680043.8.498.1", "cine.dcm#frame=1", "cine.dcm#frame=2", "cine.dcm#frame=3"]
    names = {path.name for path in out.iterdir()}
    assert {"cine.dcm.f001.gradcam.png", "cine.dcm.f003.gradcam.panel.png", "cine.dcm.gradcam.mosaic.png",
            "1.2.826.0.1.3680043.8.498.1.gradcam.png"} <= names
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for secret in (b"Doe^Jane", b"PID-7731", b"19610412"):
                assert secret not in content, f"{secret!r} in {path.name}"
    without = xai("run", tiny_model, scans, "-o", tmp_path / "plain", "-q")
    assert [Path(row["input"]).name for row in _rows(tmp_path / "plain")][0] == "cine.dcm#frame=1"
    assert without.exit_code == 0


def test_medical_files_that_cannot_be_used_are_error_rows_and_the_rest_goes_on(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _volume(scans, "good.nii.gz")
    nibabel.Nifti1Image(np.ones((8, 8), np.int16), np.eye(4)).to_filename(scans / "flat.nii")
    holes = np.ones((8, 8, 3), np.float32)
    holes[2, 2, 1] = np.inf
    nibabel.Nifti1Image(holes, np.eye(4)).to_filename(scans / "holes.nii.gz")
    nibabel.Nifti1Image(np.zeros((8, 8, 3), np.int16), np.eye(4)).to_filename(scans / "blank.nii.gz")
    whole = write_dicom(scans / "cut.dcm", np.ones((3, 24, 32), np.uint16), NumberOfFrames=3).read_bytes()
    (scans / "cut.dcm").write_bytes(whole[:-100])
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out)
    assert result.exit_code == 1, result.output
    errors = {Path(row["input"]).name: row["error"] for row in _rows(out) if row["status"] == "error"}
    assert set(errors) == {"flat.nii", "holes.nii.gz", "blank.nii.gz", "cut.dcm"}
    assert "3-D or 4-D" in errors["flat.nii"] and "non-finite" in errors["holes.nii.gz"]
    assert "only zeros" in errors["blank.nii.gz"] and "pixel data" in errors["cut.dcm"]
    assert sum(row["status"] == "ok" for row in _rows(out)) == 4


def test_skip_existing_and_resume_take_a_volume_as_a_whole(tiny_model, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    _volume(scans)
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(scans / "photo.png")
    out = tmp_path / "out"
    assert xai("run", tiny_model, scans, "-o", out, "-q").exit_code == 0
    first = _rows(out)
    mosaic = out / "brain.nii.gz.gradcam.mosaic.png"
    whole_mosaic = mosaic.read_bytes()
    (out / "brain.nii.gz.z003.gradcam.png").unlink()
    mosaic.unlink()
    again = xai("run", tiny_model, scans, "-o", out, "--skip-existing", "-q")
    assert again.exit_code == 0, again.output
    statuses = {Path(row["input"]).name: row["status"] for row in _rows(out)}
    assert statuses.pop("photo.png") == "skipped" and set(statuses.values()) == {"ok"}  # every slice again
    assert mosaic.read_bytes() == whole_mosaic and (out / "brain.nii.gz.z003.gradcam.png").exists()

    # An interrupted run that finished two of the volume's slices: --resume explains it whole again.
    table = out / "predictions.csv"
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:3]))  # header and the rows of z=1 and z=2
    mosaic.unlink()
    resumed = xai("run", tiny_model, scans, "-o", out, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert [row["input"] for row in _rows(out)] == [row["input"] for row in first]
    assert mosaic.read_bytes() == whole_mosaic  # every slice's tile is there again
