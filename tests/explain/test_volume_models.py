"""3-D models on whole volumes: a Conv3D classifier trained here on synthetic scans (a bright
ellipsoid somewhere in noise, or noise alone). Its Grad-CAM equals a GradientTape reference at the
chosen layer; the map written over each scan (NIfTI, in the scan's own voxels and affine) peaks
inside the ellipsoid; a scan stored in another voxel order gets the same map in world space."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ..conftest import xai

nibabel = pytest.importorskip("nibabel")

MODEL_SIZE = (16, 16, 16)  # the model's (D, H, W)
SCAN_SHAPE = (20, 24, 18)  # (I, J, K) voxels of every synthetic scan, RAS
SPACING = (1.0, 0.8, 1.5)  # mm per voxel along i, j, k
RADII = (3.5, 4.0, 2.5)  # the ellipsoid's half axes, in voxels along i, j, k
# A CT-like window over the scans' -1000..-745: noise alone stays dim, as it would in a scanner's
# units (a minmax stretch would make the noise of an empty scan as bright as an ellipsoid).
WINDOW = "window:-872.5,255"


def _scan(rng: np.random.Generator, with_object: bool) -> tuple[np.ndarray, np.ndarray]:
    """(I, J, K) float32 noise in 0..60 (a CT-like value range shifted by -1000), with, when
    ``with_object``, a bright ellipsoid at a random place; and its (I, J, K) bool mask."""
    values = rng.uniform(0, 60, SCAN_SHAPE).astype(np.float32)
    mask = np.zeros(SCAN_SHAPE, bool)
    if with_object:
        centre = [rng.uniform(r + 1, n - r - 1) for r, n in zip(RADII, SCAN_SHAPE)]
        grids = np.meshgrid(*(np.arange(n) for n in SCAN_SHAPE), indexing="ij")
        mask = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, RADII)) <= 1.0
        values[mask] = rng.uniform(180, 255, int(mask.sum()))
    return values - 1000.0, mask


def _affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-12.0, 30.0, -7.5)
    return affine


def _model_inputs(scans: list[np.ndarray]) -> np.ndarray:
    """What the run feeds: each scan windowed to 0..255 (``WINDOW``) and resampled to the model."""
    from xaicli._inputs.intensity import parse_intensity, to_8bit
    from xaicli._inputs.volumes import fit_volume_view, fitted_volume

    inputs = []
    for values in scans:
        eight_bit, _ = to_8bit(values, parse_intensity(WINDOW))
        inputs.append(fitted_volume(eight_bit, MODEL_SIZE, fit_volume_view(SCAN_SHAPE, MODEL_SIZE))[..., None] / 255)
    return np.stack(inputs).astype(np.float32)


def _network():
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input((*MODEL_SIZE, 1))
    x = layers.Conv3D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling3D()(x)
    x = layers.Conv3D(16, 3, padding="same", activation="relu", name="conv_b")(x)
    outputs = layers.Dense(2, activation="softmax", name="head")(layers.GlobalAveragePooling3D()(x))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The 3-D CNN trained until it tells scans with an ellipsoid from noise alone."""
    rng = np.random.default_rng(0)
    labels = np.arange(240) % 2
    inputs = _model_inputs([_scan(rng, bool(label))[0] for label in labels])
    model = _network()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(inputs, labels, epochs=12, batch_size=16, verbose=0)
    assert model.evaluate(inputs, labels, verbose=0)[1] >= 0.95
    path = tmp_path_factory.mktemp("volume-model") / "cnn3d.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """Twelve scans with an ellipsoid, stored as RAS NIfTI files: (folder, their masks)."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("scans")
    masks = []
    for index in range(12):
        values, mask = _scan(rng, True)
        nibabel.save(nibabel.Nifti1Image(values, _affine()), folder / f"scan{index:02d}.nii.gz")
        masks.append(mask)
    return folder, masks


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_gradcam_on_a_volume_equals_a_gradient_tape_reference(trained):
    import keras
    import tensorflow as tf

    from xaicli._runs.config import ExplainOptions
    from xaicli._runs.decisions import prepare_model

    model = keras.models.load_model(trained)
    prepared = prepare_model(model, ExplainOptions(methods=("gradcam",)))
    assert prepared.info.takes_volumes and prepared.layer.path == "conv_b"
    rng = np.random.default_rng(11)
    inputs = _model_inputs([_scan(rng, bool(n % 2))[0] for n in range(4)])
    explanation = prepared.explainer.explain(inputs)

    features = keras.Model(model.input, model.get_layer("conv_b").output)
    head = model.get_layer("head")
    with tf.GradientTape() as tape:
        activations = features(inputs)
        tape.watch(activations)
        logits = tf.matmul(tf.reduce_mean(activations, axis=(1, 2, 3)), head.kernel) + head.bias
        score = tf.gather(logits, explanation.classes, batch_dims=1)
    gradients = tape.gradient(score, activations).numpy()
    cam = np.maximum((gradients.mean(axis=(1, 2, 3), keepdims=True) * activations.numpy()).sum(-1), 0)
    low, high = cam.min(axis=(1, 2, 3), keepdims=True), cam.max(axis=(1, 2, 3), keepdims=True)
    reference = (cam - low) / np.maximum(high - low, 1e-12)
    assert explanation.maps["gradcam"].shape == (4, 8, 8, 8)
    assert np.allclose(explanation.maps["gradcam"], reference, atol=1e-4)


def test_the_map_over_each_scan_peaks_inside_its_ellipsoid(trained, scans, tmp_path):
    folder, masks = scans
    out = tmp_path / "out"
    result = xai("run", trained, folder, "-o", out, "--class", "1", "--intensity", WINDOW, "--save", "overlay,raw")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [row["status"] for row in rows] == ["ok"] * 12
    inside = 0
    for row, mask in zip(rows, masks):
        assert row["output"].endswith(".gradcam.nii.gz")
        written = nibabel.load(row["output"])
        assert written.shape == SCAN_SHAPE and np.allclose(written.affine, _affine())
        assert written.get_data_dtype() == np.float32
        values = np.asarray(written.dataobj)
        inside += bool(mask[np.unravel_index(np.argmax(values), values.shape)])
        stem = row["output"][: -len(".nii.gz")]
        assert np.load(stem + ".npy").shape == (8, 8, 8)  # the method's own resolution, conv_b's
        for picture in (".ortho.png", ".mosaic.png"):
            assert Path(stem + picture).stat().st_size > 0
    assert inside >= 0.9 * len(masks), f"{inside} of {len(masks)} maps peak inside the ellipsoid"
    resolved = json.loads((out / "run.json").read_text())["resolved"]
    assert resolved["volumes"]["input_size"] == list(MODEL_SIZE)
    assert resolved["layer"] == "conv_b"


def test_a_scan_in_another_voxel_order_gets_the_same_map_in_world_space(trained, tmp_path):
    """The same scan stored as RAS and as a NIfTI whose axes are permuted and flipped (its affine
    says so): both maps, read back, agree voxel for voxel in world coordinates."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    values, mask = _scan(np.random.default_rng(5), True)
    folder = tmp_path / "scans"
    folder.mkdir()
    ras = nibabel.Nifti1Image(values, _affine())
    nibabel.save(ras, folder / "ras.nii.gz")
    nibabel.save(ras.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("SLP"))), folder / "slp.nii")
    out = tmp_path / "out"
    assert xai("run", trained, folder, "-o", out, "--class", "1", "--intensity", WINDOW).exit_code == 0
    maps = {name: nibabel.load(out / f"{name}.gradcam.nii.gz") for name in ("ras.nii.gz", "slp.nii")}
    stored = maps["slp.nii"]
    assert stored.shape == (SCAN_SHAPE[2], SCAN_SHAPE[0], SCAN_SHAPE[1])  # the file's own voxel order
    assert np.allclose(stored.affine, nibabel.load(folder / "slp.nii").affine)
    canonical = {name: nibabel.as_closest_canonical(image) for name, image in maps.items()}
    assert np.allclose(canonical["ras.nii.gz"].affine, canonical["slp.nii"].affine)
    assert np.array_equal(np.asarray(canonical["ras.nii.gz"].dataobj), np.asarray(canonical["slp.nii"].dataobj))
    # The peak's world coordinate, from the reoriented file's own affine, lies in the ellipsoid.
    data = np.asarray(stored.dataobj)
    world = stored.affine @ [*np.unravel_index(np.argmax(data), data.shape), 1]
    voxel = np.round(np.linalg.inv(_affine()) @ world).astype(int)[:3]
    assert mask[tuple(voxel)]


def test_what_is_not_a_volume_is_an_error_row_and_options_that_cannot_follow_are_refused(trained, scans, tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(next(scans[0].glob("*.nii.gz")).read_bytes())
    Image.new("RGB", (20, 20)).save(folder / "photo.png")
    (folder / "broken.nii").write_bytes(b"not a volume")
    out = tmp_path / "out"
    result = xai("run", trained, folder, "-o", out, "--intensity", WINDOW)
    assert result.exit_code == 1
    rows = {Path(row["input"]).name: row for row in _rows(out)}
    assert rows["a.nii.gz"]["status"] == "ok"
    assert rows["photo.png"]["status"] == "error" and "this model takes volumes" in rows["photo.png"]["error"]
    assert rows["broken.nii"]["status"] == "error"
    for option, message in ((("--save", "panel"), "2-D pictures"), (("--method", "attention"), "3-D model"),
                            (("--truth-masks", folder), "not supported on volumes yet")):
        refused = xai("run", trained, folder, "-o", tmp_path / "refused", *option)
        assert refused.exit_code == 2 and message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def _on_model_grid(heatmap: np.ndarray) -> np.ndarray:
    """A model-space map resized to the model's input by linear interpolation along each axis
    in turn (voxel centres aligned, ends held): np.interp, not the product's resampler."""
    for axis, count in enumerate(MODEL_SIZE):
        coordinates = (np.arange(count) + 0.5) * heatmap.shape[axis] / count - 0.5
        heatmap = np.apply_along_axis(lambda line: np.interp(coordinates, np.arange(len(line)), line), axis, heatmap)
    return heatmap


def _blur_by_hand(volume: np.ndarray) -> np.ndarray:
    """(D, H, W) blurred by the 11x11x11 Gaussian (sigma 5) as one 3-D kernel, edges reflected."""
    taps = np.exp(-np.arange(-5, 6) ** 2 / 50.0)
    kernel = np.einsum("i,j,k->ijk", taps, taps, taps)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(volume, 5, mode="reflect"), (11, 11, 11))
    return np.einsum("dhwijk,ijk->dhw", windows, kernel / kernel.sum())


def test_deletion_and_insertion_rank_a_volume_s_voxels_by_its_map(trained, scans, tmp_path):
    """The curves' areas equal a numpy computation: voxels ranked by the map resized to the
    model's grid, removed to the black baseline or revealed over a 3-D blur, in equal steps."""
    import keras

    folder, _ = scans
    steps = 4
    out = tmp_path / "out"
    chosen = tmp_path / "two"
    chosen.mkdir()
    for name in ("scan00.nii.gz", "scan01.nii.gz"):
        (chosen / name).write_bytes((folder / name).read_bytes())
    result = xai("run", trained, chosen, "-o", out, "--class", "1", "--intensity", WINDOW, "--save", "raw",
                 "--metrics", "deletion,insertion", "--metric-steps", steps)
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(trained)
    for row in _rows(out):
        scan = np.asarray(nibabel.load(row["input"]).dataobj, np.float32)
        image = _model_inputs([scan])[0]
        heatmap = np.load(row["output"][: -len(".nii.gz")] + ".npy")
        order = np.argsort(-_on_model_grid(heatmap).ravel(), kind="stable")
        deleted, inserted = image.ravel().copy(), _blur_by_hand(image[..., 0]).ravel().astype(np.float32)
        curves = {"deletion": [], "insertion": []}
        for step in range(steps + 1):
            chosen_voxels = order[round((step - 1) * deleted.size / steps):round(step * deleted.size / steps)] if step else []
            deleted[chosen_voxels] = 0.0
            inserted[chosen_voxels] = image.ravel()[chosen_voxels]
            for name, values in (("deletion", deleted), ("insertion", inserted)):
                curves[name].append(model.predict(values.reshape(1, *MODEL_SIZE, 1), verbose=0)[0, 1])
        for name, curve in curves.items():
            area = sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / steps
            assert float(row[f"{name}_auc"]) == pytest.approx(area, abs=1e-5), name
    means = json.loads((out / "run.json").read_text())["metrics"]["gradcam"]
    assert means["deletion"] < means["insertion"]  # the trained model's map finds what it looks at


def test_resume_redoes_a_volume_whose_files_are_missing_with_the_same_bytes(trained, scans, tmp_path):
    folder, _ = scans
    out = tmp_path / "out"
    assert xai("run", trained, folder, "-o", out, "--method", "gradcam,saliency", "--save", "overlay,raw").exit_code == 0
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix != ".html" and p.name != "run.json"}
    (out / "scan03.nii.gz.saliency.ortho.png").unlink()
    (out / "scan05.nii.gz.gradcam.nii.gz").unlink()
    result = xai("run", trained, folder, "-o", out, "--method", "gradcam,saliency", "--save", "overlay,raw", "--resume")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in files} == files


def _write_series(folder: Path, values: np.ndarray, affine: np.ndarray, uid: str, rng: np.random.Generator) -> list[Path]:
    """``values`` (I, J, K) RAS, whole numbers of -1000..-745, as a DICOM series of axial slices
    (one file per k, stored + 1000 with RescaleIntercept -1000), their geometry from ``affine``,
    written under shuffled names so that only their positions give the order."""
    from ..inputs.test_dicom import write_dicom

    folder.mkdir(parents=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    names = rng.permutation(values.shape[2])
    paths = []
    for k in range(values.shape[2]):
        position = lps @ [0, 0, k, 1]
        paths.append(write_dicom(
            folder / f"IM{names[k]:04d}.dcm", np.ascontiguousarray((values[:, :, k].T + 1000).astype(np.uint16)),
            SeriesInstanceUID=uid, ImagePositionPatient=[f"{v:.4f}" for v in position[:3]],
            ImageOrientationPatient=[-1, 0, 0, 0, -1, 0], PixelSpacing=[f"{spacing[1]:g}", f"{spacing[0]:g}"],
            RescaleSlope=1, RescaleIntercept=-1000))
    return paths


def _scan_folder(tmp_path: Path, seed: int) -> tuple[Path, np.ndarray, np.ndarray, np.random.Generator]:
    """A folder holding one scan with an ellipsoid (whole numbers, as a scanner stores them) as
    ras.nii.gz: (folder, the scan's values, its mask, the generator for what follows)."""
    rng = np.random.default_rng(seed)
    values, mask = _scan(rng, True)
    values = np.round(values)
    folder = tmp_path / "scans"
    folder.mkdir()
    nibabel.save(nibabel.Nifti1Image(values.astype(np.int16), _affine()), folder / "ras.nii.gz")
    return folder, values, mask, rng


def _same_in_world(first: Path, second: Path) -> np.ndarray:
    """Two NIfTI maps agree voxel for voxel in world coordinates; the second's canonical image."""
    maps = [nibabel.as_closest_canonical(nibabel.load(path)) for path in (first, second)]
    assert np.allclose(maps[0].affine, maps[1].affine, atol=1e-4)
    assert np.array_equal(np.asarray(maps[0].dataobj), np.asarray(maps[1].dataobj))
    return maps[1]


def test_a_dicom_series_is_one_volume_with_the_map_in_the_scans_world_space(trained, tmp_path):
    """The same scan as a RAS NIfTI and as a DICOM series with shuffled file names: the two maps,
    read back with nibabel, agree voxel for voxel in world coordinates; no patient tag reaches
    any output; a series missing a slice and one with two orientations are error rows."""
    import pydicom

    folder, values, mask, rng = _scan_folder(tmp_path, 9)
    uid = "1.2.826.0.1.3680043.8.498.1001"
    _write_series(folder / "series", values, _affine(), uid, rng)
    gap = _write_series(folder / "gap", values, _affine(), "1.2.826.0.1.3680043.8.498.1002", rng)
    sorted(gap, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[7].unlink()
    tilted = _write_series(folder / "tilted", values, _affine(), "1.2.826.0.1.3680043.8.498.1003", rng)
    dataset = pydicom.dcmread(tilted[4])
    dataset.ImageOrientationPatient = [-1, 0, 0, 0, -0.9, 0.43589]
    dataset.save_as(tilted[4])

    out = tmp_path / "out"
    result = xai("run", trained, folder, "-o", out, "--class", "1", "--intensity", WINDOW)
    assert result.exit_code == 1, result.output
    rows = {row["input"]: row for row in _rows(out)}
    assert len(rows) == 4  # the NIfTI and three series, whatever their files
    series_row = rows[f"{folder / 'series'}#series={uid}"]
    assert series_row["status"] == "ok" and series_row["output"] == str(out / "series" / f"{uid}.gradcam.nii.gz")
    gap_row = next(row for name, row in rows.items() if name.startswith(str(folder / "gap")))
    assert gap_row["status"] == "error" and "missing a slice" in gap_row["error"]
    tilted_row = next(row for name, row in rows.items() if name.startswith(str(folder / "tilted")))
    assert tilted_row["status"] == "error" and "two orientations" in tilted_row["error"]

    series_map = _same_in_world(out / "ras.nii.gz.gradcam.nii.gz", out / "series" / f"{uid}.gradcam.nii.gz")
    data = np.asarray(series_map.dataobj)
    world = series_map.affine @ [*np.unravel_index(np.argmax(data), data.shape), 1]
    assert mask[tuple(np.round(np.linalg.inv(_affine()) @ world).astype(int)[:3])]
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert b"Doe^Jane" not in content and b"PID-7731" not in content, path


def _write_enhanced(path: Path, values: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> Path:
    """``values`` (I, J, K) RAS as one enhanced multi-frame DICOM of axial frames stored in a
    shuffled order: each frame's position and rescale in its own functional group, orientation and
    pixel spacing shared, as enhanced CT files carry them."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from ..inputs.test_dicom import write_dicom

    def group(**sequences: Dataset) -> Dataset:
        item = Dataset()
        for keyword, content in sequences.items():
            setattr(item, keyword, Sequence([content]))
        return item

    def attributes(**tags) -> Dataset:
        item = Dataset()
        for keyword, value in tags.items():
            setattr(item, keyword, value)
        return item

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    stored = rng.permutation(values.shape[2])  # the k of each stored frame
    frames = np.stack([(values[:, :, k].T + 1000).astype(np.uint16) for k in stored])
    per_frame = [group(PlanePositionSequence=attributes(ImagePositionPatient=[f"{v:.4f}" for v in (lps @ [0, 0, k, 1])[:3]]),
                       PixelValueTransformationSequence=attributes(RescaleSlope=1, RescaleIntercept=-1000))
                 for k in stored]
    shared = group(PlaneOrientationSequence=attributes(ImageOrientationPatient=[-1, 0, 0, 0, -1, 0]),
                   PixelMeasuresSequence=attributes(PixelSpacing=[f"{spacing[1]:g}", f"{spacing[0]:g}"],
                                                    SliceThickness=f"{spacing[2]:g}"))
    return write_dicom(path, frames, NumberOfFrames=len(frames), PerFrameFunctionalGroupsSequence=Sequence(per_frame),
                       SharedFunctionalGroupsSequence=Sequence([shared]))


def test_an_enhanced_multiframe_dicom_is_one_volume_placed_by_its_frames_positions(trained, tmp_path):
    """An enhanced multi-frame file of the scan, frames shuffled: its map equals the NIfTI's in
    world space; a multi-frame file with no frame positions and a lone single-frame file are
    error rows that say why."""
    from ..inputs.test_dicom import write_dicom

    folder, values, _, rng = _scan_folder(tmp_path, 13)
    _write_enhanced(folder / "enhanced.dcm", values, _affine(), rng)
    write_dicom(folder / "cine.dcm", np.zeros((4, 8, 8), np.uint16), NumberOfFrames=4)
    write_dicom(folder / "lone.dcm", np.zeros((8, 8), np.uint16))
    out = tmp_path / "out"
    result = xai("run", trained, folder, "-o", out, "--class", "1", "--intensity", WINDOW)
    assert result.exit_code == 1, result.output
    rows = {Path(row["input"]).name: row for row in _rows(out)}
    assert rows["enhanced.dcm"]["status"] == "ok"
    assert rows["cine.dcm"]["status"] == "error" and "does not say where its frames lie" in rows["cine.dcm"]["error"]
    assert rows["lone.dcm"]["status"] == "error" and "no series to join" in rows["lone.dcm"]["error"]
    _same_in_world(out / "ras.nii.gz.gradcam.nii.gz", out / "enhanced.dcm.gradcam.nii.gz")


def test_the_python_api_explains_volumes_as_the_command_line_does(trained, scans, tmp_path):
    """``Explainer.explain`` on a NIfTI path, a DICOM series folder, a nibabel image and an array:
    the same maps as ``xai run``'s, the map over the scan and the pictures byte for byte its files."""
    from PIL import Image

    import xaicli
    from xaicli._errors import ImageError, UsageError

    folder, _ = scans
    nifti = folder / "scan02.nii.gz"
    image = nibabel.load(nifti)
    values = np.asarray(image.dataobj)
    uid = "1.2.826.0.1.3680043.8.498.2001"
    _write_series(tmp_path / "series", np.round(values), _affine(), uid, np.random.default_rng(4))
    out = tmp_path / "out"
    assert xai("run", trained, nifti, "-o", out, "--class", "1", "--intensity", WINDOW).exit_code == 0

    explainer = xaicli.Explainer(trained, methods="gradcam")
    assert explainer.takes_volumes and explainer.input_size == (16, 16, 16)
    explanation = explainer.explain([nifti, tmp_path / "series", image, values], target_class=1, intensity=WINDOW)
    maps = explanation.maps["gradcam"]
    assert maps.shape == (4, 8, 8, 8)
    assert [row["input"] for row in explanation.predictions] == [
        str(nifti), f"{tmp_path / 'series'}#series={uid}", "<volume 2>", "<array 3>"]
    assert np.array_equal(maps[0], maps[2]) and np.array_equal(maps[0], maps[3])  # the same voxels, read three ways
    written = nibabel.load(out / "scan02.nii.gz.gradcam.nii.gz")
    assert np.array_equal(explanation.scan_map(0, "gradcam"), np.asarray(written.dataobj))
    assert np.allclose(explanation.affine(0), written.affine)
    assert explanation.scan_map(3, "gradcam").shape == values.shape
    for picture, drawn in ((".ortho.png", explanation.overlay(0, "gradcam")), (".mosaic.png", explanation.mosaic(0, "gradcam"))):
        assert np.array_equal(np.asarray(drawn), np.asarray(Image.open(out / f"scan02.nii.gz.gradcam{picture}")))
    with pytest.raises(UsageError, match="2-D picture"):
        explanation.heatmap(0, "gradcam")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    with pytest.raises(ImageError, match=r"volume 0 \(.*photo.png\): this model takes volumes"):
        explainer.explain(tmp_path / "photo.png")


def test_the_page_shows_each_volume_s_planes_and_links_its_mosaic_and_map(trained, scans, tmp_path, browser):
    """In the browser: one card per volume, its picture the three planes (loaded, wider than
    tall), its links opening the run's own mosaic and NIfTI map; a bad file is listed as failed."""
    from xaicli._outputs.report import REPORT_NAME

    from ..conftest import wait_until

    folder, _ = scans
    chosen = tmp_path / "scans"
    chosen.mkdir()
    for name in ("scan00.nii.gz", "scan01.nii.gz"):
        (chosen / name).write_bytes((folder / name).read_bytes())
    (chosen / "broken.nii").write_bytes(b"not a volume")
    out = tmp_path / "out"
    assert xai("run", trained, chosen, "-o", out, "--intensity", WINDOW, "-q").exit_code == 1
    page = browser.new_page(viewport={"width": 1280, "height": 3000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((out / REPORT_NAME).as_uri())
    page.wait_for_load_state("load")
    wait_until(page, "document.querySelectorAll('#gallery .card img').length === 2 && "
                     "[...document.images].every(image => image.complete && image.naturalWidth > 0)")
    page.select_option("#sort", "path")
    cards = page.eval_on_selector_all("#gallery .card[data-status='ok']", """cards => cards.map(c => ({
        input: c.dataset.input, size: [...c.querySelectorAll('img')].map(i => [i.naturalWidth, i.naturalHeight]),
        links: [...c.querySelectorAll('a.file')].map(a => [a.textContent, a.href])}))""")
    assert errors == []
    assert [Path(card["input"]).name for card in cards] == ["scan00.nii.gz", "scan01.nii.gz"]
    for card in cards:
        ((width, height),) = card["size"]
        assert width > 2 * height  # three planes side by side
        stem = out / f"{Path(card['input']).name}.gradcam"
        assert card["links"] == [["axial slices", Path(f"{stem}.mosaic.png").as_uri()],
                                 ["map (.nii.gz)", Path(f"{stem}.nii.gz").as_uri()]]
    assert "broken.nii" in page.inner_text("#failed")
    page.close()
