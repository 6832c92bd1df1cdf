"""Segmentation models (Seg-Grad-CAM): each class in the predicted mask explained over its region.
Maps are checked against a GradientTape reference of the region's summed class logits, and on a
U-Net trained here on synthetic shapes, each shape's map peaks inside that shape."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ..conftest import xai

SIDE = 32


def _unet(channels: int, activation: str, seed: int):
    """A small U-Net: 'dec_conv' (full resolution, after the skip connection) feeds the 1x1
    per-pixel classifier 'mask'."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIDE, SIDE, 3))
    encoded = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc_conv")(inputs)
    middle = layers.Conv2D(16, 3, padding="same", activation="relu", name="mid_conv")(layers.MaxPooling2D()(encoded))
    joined = layers.Concatenate()([layers.UpSampling2D()(middle), encoded])
    decoded = layers.Conv2D(8, 3, padding="same", activation="relu", name="dec_conv")(joined)
    return keras.Model(inputs, layers.Conv2D(channels, 1, activation=activation, name="mask")(decoded))


def _shapes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy 32x32 RGB images (uint8) each with a bright square (class 1) and a bright
    disk (class 2) apart from each other, and their (count, 32, 32) class masks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (count, SIDE, SIDE, 3)).astype(np.uint8)
    masks = np.zeros((count, SIDE, SIDE), np.int64)
    rows, columns = np.mgrid[:SIDE, :SIDE]
    for image, mask in zip(images, masks):
        left = rng.integers(0, 2)  # the square on the left half, the disk on the right, or the other way round
        top, x = rng.integers(2, SIDE - 11), rng.integers(2, 6) + (0 if left else 16)
        mask[top:top + 9, x:x + 9] = 1
        cy, cx = rng.integers(7, SIDE - 7), rng.integers(7, 10) + (16 if left else 0)
        mask[(rows - cy) ** 2 + (columns - cx) ** 2 <= 25] = 2
        image[mask > 0] = rng.integers(200, 256, (int((mask > 0).sum()), 3))
    return images, masks


def _save(images: np.ndarray, folder):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"s{index:02d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def _rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained U-Nets (softmax over 3 classes; one sigmoid channel) and a softmax one trained
    on the synthetic shapes, saved."""
    folder = tmp_path_factory.mktemp("unets")
    paths = {"softmax": folder / "softmax.keras", "sigmoid": folder / "sigmoid.keras",
             "trained": folder / "trained.keras"}
    _unet(3, "softmax", 1).save(paths["softmax"])
    _unet(1, "sigmoid", 2).save(paths["sigmoid"])
    trained = _unet(3, "softmax", 3)
    images, masks = _shapes(384, 0)
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(images.astype(np.float32) / 255.0, masks, epochs=25, batch_size=32, verbose=0)
    trained.save(paths["trained"])
    return paths


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    rng = np.random.default_rng(9)
    return _save(rng.integers(0, 256, (5, SIDE, SIDE, 3)).astype(np.uint8), tmp_path_factory.mktemp("noise"))


def _seg_gradcam_reference(model, image: np.ndarray, unit: int, region: np.ndarray) -> np.ndarray:
    """Seg-Grad-CAM by GradientTape at 'dec_conv': the score is class ``unit``'s logit (the 1x1
    classifier before its activation) summed over ``region``."""
    import keras
    import tensorflow as tf

    head = model.get_layer("mask")
    features = keras.Model(model.inputs, model.get_layer("dec_conv").output)
    with tf.GradientTape() as tape:
        activations = features(image[None])
        tape.watch(activations)
        logits = tf.einsum("bhwk,kc->bhwc", activations, head.kernel[0, 0]) + head.bias
        score = tf.reduce_sum(logits[..., unit] * region)
    gradients = tape.gradient(score, activations).numpy()[0]
    cam = np.maximum((gradients.mean(axis=(0, 1)) * activations.numpy()[0]).sum(-1), 0)
    return (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else np.zeros_like(cam)


def test_each_class_in_the_predicted_mask_is_explained_over_its_region(models, noise, tmp_path):
    import keras

    model = keras.models.load_model(models["softmax"])
    out = tmp_path / "out"
    result = xai("run", models["softmax"], noise[0].parent, "-o", out, "--save", "overlay,raw", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["resolved"]["kind"] == "segmentation"
    assert manifest["resolved"]["layer"] == "dec_conv"
    rows = _rows(out / "predictions.csv")
    explained = 0
    for path in noise:
        image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(path), np.float32) / 255.0
        probabilities = model(image[None], training=False).numpy()[0]
        predicted = probabilities.argmax(-1)
        present = [c for c in (1, 2) if (predicted == c).any()]
        mine = [r for r in rows if r["input"] == str(path)]
        assert [int(r["class_index"]) for r in mine] == present
        for row, unit in zip(mine, present):
            region = (predicted == unit).astype(np.float32)
            assert int(row["region_pixels"]) == int(region.sum())
            assert float(row["class_prob"]) == pytest.approx(probabilities[..., unit][region > 0].mean(), abs=2e-6)
            reference = _seg_gradcam_reference(model, image, unit, region)
            np.testing.assert_allclose(np.load(out / f"{path.name}.gradcam.label{unit}.npy"), reference, atol=1e-4)
            explained += 1
    assert explained >= 4


def test_a_trained_unet_s_maps_peak_inside_each_shape(models, tmp_path):
    images, masks = _shapes(20, 1)
    paths = _save(images, tmp_path / "shapes")
    out = tmp_path / "out"
    result = xai("run", models["trained"], tmp_path / "shapes", "-o", out, "--save", "raw,panel",
                 "--labels", _labels(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    hits, maps = 0, 0
    for path, mask in zip(paths, masks):
        for unit, name in ((1, "square"), (2, "disk")):
            found = out / f"{path.name}.gradcam.{name}.npy"
            if not found.exists():
                continue
            heat = np.load(found)
            peak = np.unravel_index(np.argmax(heat), heat.shape)
            hits += mask[peak] == unit
            maps += 1
    assert maps >= 36  # the model finds both shapes on nearly every image
    assert hits / maps >= 0.9, (hits, maps)


def _labels(folder):
    (folder / "labels.txt").write_text("background\nsquare\ndisk\n")
    return folder / "labels.txt"


def test_a_sigmoid_channel_is_background_and_foreground(models, noise, tmp_path):
    import keras

    model = keras.models.load_model(models["sigmoid"])
    out = tmp_path / "out"
    assert xai("run", models["sigmoid"], noise[0].parent, "-o", out, "--save", "raw", "-q").exit_code == 0
    rows = _rows(out / "predictions.csv")
    info = json.loads(xai("info", models["sigmoid"], "--json").stdout)
    assert (info["kind"], info["classes"]) == ("segmentation", 2)
    for path in noise:
        image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(path), np.float32) / 255.0
        foreground = model(image[None], training=False).numpy()[0, ..., 0] >= 0.5
        (row,) = [r for r in rows if r["input"] == str(path)]
        if foreground.any():
            assert (row["class_index"], int(row["region_pixels"])) == ("1", int(foreground.sum()))
        else:
            assert row["class_index"] == "" and "no class but the background" in row["note"]


def test_keras_hub_deeplab_built_from_a_config(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    keras.utils.set_random_seed(4)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[16], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1], stackwise_num_strides=[1, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(64, 64, 3))
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P4", upsampling_size=4, dilation_rates=[2, 4],
        low_level_feature_key="P2", projection_filters=8, image_shape=(64, 64, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    head = segmenter.get_layer("segmentation_output")  # untrained, it calls every pixel background
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    path = tmp_path / "deeplab.keras"
    segmenter.save(path)
    images = _save(np.random.default_rng(3).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8), tmp_path / "in")
    out = tmp_path / "out"
    result = xai("run", path, tmp_path / "in", "-o", out, "-m", "gradcam,saliency", "--save", "overlay,raw")
    assert result.exit_code == 0, result.output
    assert "segmentation (a per-pixel linear output of 3 channels)" in result.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["resolved"]["layer"] == "deep_lab_v3_backbone/segmentation_head_relu"
    rows = [r for r in _rows(out / "predictions.csv") if r["method"] == "gradcam"]
    assert any(r["class_index"] for r in rows)
    model = keras.models.load_model(path)
    for image_path in images:
        image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(image_path), np.float32) / 255.0
        predicted = model(image[None], training=False).numpy()[0].argmax(-1)  # inference: its ASPP has dropout
        mine = [r for r in rows if r["input"] == str(image_path)]
        assert [(int(r["class_index"]), int(r["region_pixels"])) for r in mine] == [
            (c, int((predicted == c).sum())) for c in (1, 2) if (predicted == c).any()]
        for row in mine:
            heat = np.load(out / f"{image_path.name}.gradcam.label{row['class_index']}.npy")
            assert heat.shape == (16, 16) and np.isfinite(heat).all() and heat.max() == 1.0


@pytest.mark.parametrize("args, message", [
    (["--background", "7"], "--background 7 is out of range: the model has 3 classes (0..2)"),
    (["--target", "topk", "--top-k", "2"], "--target topk ranks an image's classes; this model's output is "
                                           "segmentation (a per-pixel softmax output of 3 channels)"),
    (["--threshold", "0.3"], "--threshold goes with a multi-label model"),
    (["--sign", "negative"], "--sign says which way a regression's value is explained"),
])
def test_options_that_do_not_fit_a_segmentation_are_one_line(models, noise, tmp_path, args, message):
    result = xai("run", models["softmax"], noise[0].parent, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line


def test_background_on_a_classifier_is_one_line(tiny_model, image_folder, tmp_path):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--background", "0")
    assert result.exit_code == 2
    assert "--background names the class a segmentation does not explain" in result.stderr


def test_the_overlay_outlines_the_region(models, noise, tmp_path):
    """The overlay differs from the plain blend exactly on the region's edge, drawn white."""
    import xaicli
    from xaicli._outputs.render import COLORMAPS, overlay
    from PIL import Image

    explanation = xaicli.Explainer(models["softmax"]).explain(noise[0])
    explained = explanation._explained[0][0]
    drawn = np.asarray(explanation.overlay(0, "gradcam"))
    picture = Image.open(noise[0]).convert("RGB")
    plain = overlay(picture, explanation.maps["gradcam"][0][0], 0.4, COLORMAPS["jet"]())
    changed = np.any(drawn != plain, axis=-1)
    region = explained.target.region > 0.5  # the image is the grid's size: one pixel per cell
    padded = np.pad(region, 1, mode="edge")  # the image's border is no edge
    interior = np.all([padded[1 + dy:1 + dy + SIDE, 1 + dx:1 + dx + SIDE] for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
                      axis=0)
    edge = region & ~interior  # inside, with one of its 8 neighbours outside
    assert changed.any() and np.array_equal(changed, edge)
    assert (drawn[changed] == 255).all()


@pytest.fixture(scope="module")
def doubled(tmp_path_factory):
    """Four 64x64 shape images (each 32x32 one's pixels doubled) and their label maps, as PNGs
    mirroring the images; the last image's mask lacks the disk, which the model still sees."""
    folder = tmp_path_factory.mktemp("doubled")
    images, masks = _shapes(4, 7)
    big = np.kron(images, np.ones((1, 2, 2, 1), np.uint8))
    paths = _save(big, folder / "in")
    masks[-1][masks[-1] == 2] = 0
    (folder / "masks").mkdir()
    for path, mask in zip(paths, masks):
        __import__("PIL.Image", fromlist=["Image"]).fromarray(
            np.kron(mask, np.ones((2, 2), np.int64)).astype(np.uint8)).save(folder / "masks" / path.name)
    return paths, masks


def _model_input(path):
    from PIL import Image

    from xaicli._inputs.geometry import to_model_input
    from xaicli._inputs.scaling import PRESETS

    return to_model_input(Image.open(path).convert("RGB"), (SIDE, SIDE), 3, PRESETS["unit"])


def test_region_truth_explains_each_class_of_the_label_map_over_its_pixels(models, doubled, tmp_path):
    """Each grid cell reads the label map at its centre: cell (i, j) of the 32x32 grid is pixel
    (2i+1, 2j+1) of the 64x64 mask, the 32x32 mask's (i, j). The maps follow the truth, and
    pointing, energy and IoU compare each class's map with that class's pixels only."""
    import keras

    paths, masks = doubled
    model = keras.models.load_model(models["trained"])
    out = tmp_path / "out"
    result = xai("run", models["trained"], paths[0].parent, "-o", out, "--region", "truth",
                 "--truth-masks", paths[0].parent.parent / "masks", "--save", "raw", "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    differs = 0
    for path, mask in zip(paths, masks):
        mine = [r for r in rows if r["input"] == str(path)]
        present = [c for c in (1, 2) if (mask == c).any()]
        assert [(int(r["class_index"]), int(r["region_pixels"])) for r in mine] == [
            (c, int((mask == c).sum())) for c in present]
        for row in mine:
            unit = int(row["class_index"])
            reference = _seg_gradcam_reference(model, _model_input(path), unit, (mask == unit).astype(np.float32))
            heat = np.load(out / f"{path.name}.gradcam.label{unit}.npy")
            np.testing.assert_allclose(heat, reference, atol=1e-4)
            # Energy against this class's pixels (the map drawn over the 64x64 image nearly as
            # its cells doubled), not against every labelled pixel.
            drawn = np.kron(heat, np.ones((2, 2)))
            mine_only = (drawn * np.kron(mask == unit, np.ones((2, 2)))).sum() / drawn.sum()
            labelled = (drawn * np.kron(mask > 0, np.ones((2, 2)))).sum() / drawn.sum()
            assert float(row["energy_in"]) == pytest.approx(mine_only, abs=0.03)
            differs += abs(labelled - mine_only) > 0.1
    assert len(rows) == 7  # the disk left out of the last mask is not explained
    assert differs


def test_region_truth_without_a_mask_or_with_a_class_the_model_lacks_is_an_error_row(models, doubled, tmp_path):
    from PIL import Image

    paths, _ = doubled
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((64, 64), 5, np.uint8)).save(masks / paths[0].name)
    result = xai("run", models["trained"], paths[0], paths[1], "-o", tmp_path / "out", "--region", "truth",
                 "--truth-masks", masks, "-q")
    assert result.exit_code == 1, result.output
    first, second = _rows(tmp_path / "out" / "predictions.csv")
    assert first["status"] == "error" and "the truth mask has class 5 but the model has 3 classes (0..2)" in first["error"]
    assert second["status"] == "error" and "no mask for this image under --truth-masks" in second["error"]


def test_region_box_explains_each_class_predicted_inside_it_over_the_box(models, doubled, tmp_path):
    """box:0,0,32,64 is the left half of a 64x64 image: the cells of the grid's left 16 columns."""
    import keras

    paths, _ = doubled
    model = keras.models.load_model(models["trained"])
    out = tmp_path / "out"
    result = xai("run", models["trained"], paths[0].parent, "-o", out, "--region", "box:0,0,32,64", "--save", "raw",
                 "-q")
    assert result.exit_code == 0, result.output
    box = np.zeros((SIDE, SIDE), np.float32)
    box[:, :16] = 1
    rows = _rows(out / "predictions.csv")
    for path in paths:
        inputs = _model_input(path)
        predicted = model(inputs[None], training=False).numpy()[0].argmax(-1)
        inside = [c for c in (1, 2) if (predicted[:, :16] == c).any()]
        mine = [r for r in rows if r["input"] == str(path)]
        assert [(int(r["class_index"]), int(r["region_pixels"])) for r in mine] == [(c, 512) for c in inside]
        for row in mine:
            unit = int(row["class_index"])
            np.testing.assert_allclose(np.load(out / f"{path.name}.gradcam.label{unit}.npy"),
                                       _seg_gradcam_reference(model, inputs, unit, box), atol=1e-4)


@pytest.mark.parametrize("args, message", [
    (["--region", "box:0,0,10"], "--region box:0,0,10: give a box as box:X0,Y0,X1,Y1 in original pixels"),
    (["--region", "box:5,0,5,10"], "a box needs 0 <= X0 < X1 and 0 <= Y0 < Y1"),
    (["--region", "box:0,0,65,10"], "s00.png: --region box:0,0,65,10 reaches beyond the image's 64x64 pixels"),
    (["--region", "truth"], "--region truth takes each image's regions from --truth-masks"),
    (["--region", "mask"], "unknown --region 'mask'; choose from predicted, truth, box:X0,Y0,X1,Y1"),
])
def test_bad_regions_are_one_line_before_the_model_runs(models, doubled, tmp_path, args, message):
    paths, _ = doubled
    result = xai("run", models["trained"], paths[0].parent, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_region_on_a_classifier_is_one_line(tiny_model, image_folder, tmp_path):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--region", "box:0,0,4,4")
    assert result.exit_code == 2
    assert "--region says where a segmentation's class is explained" in result.stderr


def test_the_api_explains_a_box_and_refuses_truth(models, doubled):
    import xaicli
    from xaicli import UsageError

    paths, _ = doubled
    explainer = xaicli.Explainer(models["trained"])
    boxed = explainer.explain(paths[0], region="box:0,0,32,64")
    whole = explainer.explain(paths[0])
    assert {record["region_pixels"] for record in boxed.predictions} == {512}
    assert all(record["region_pixels"] != 512 for record in whole.predictions)
    with pytest.raises(UsageError, match="region='truth' reads each image's label map from a run's --truth-masks"):
        explainer.explain(paths[0], region="truth")


def test_the_page_shows_each_image_s_classes_and_region_sizes(models, doubled, tmp_path, browser):
    from PIL import Image

    from .test_heads import _page_cards

    paths, _ = doubled
    images = tmp_path / "images"
    images.mkdir()
    for path in paths:
        (images / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (64, 64)).save(images / "zz_black.png")  # no shape: nothing but background
    out = tmp_path / "out"
    result = xai("run", models["trained"], images, "-o", out, "--labels", _labels(tmp_path), "--summary",
                 tmp_path / "summary.md", "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    summary = (tmp_path / "summary.md").read_text()
    first = [r for r in rows if r["input"] == str(images / paths[0].name) and r["class_index"]]
    assert "| image | classes explained (region) |" in summary
    assert ", ".join(f"{r['class_label']} {r['region_pixels']} px" for r in first) in summary
    page, cards, _, errors = _page_cards(browser, out)
    assert errors == []
    for card in cards:
        mine = [r for r in rows if r["input"] == card["input"]]
        assert card["chips"] == [f"{r['class_label']} {r['region_pixels']} px" for r in mine if r["class_index"]]
        assert card["none"] == (not card["chips"])
    assert sum(len(card["chips"]) for card in cards) >= 7 and cards[-1]["none"]
    loaded = page.eval_on_selector_all("#gallery .card img", "images => images.map(i => i.naturalWidth)")
    assert loaded and all(width > 0 for width in loaded)
    page.close()


def test_a_stopped_run_over_truth_regions_resumed_ends_as_a_whole_one(models, doubled, tmp_path):
    import xaicli

    paths, _ = doubled
    options = {"save": ["overlay", "raw"], "batch_size": 1, "report": False, "region": "truth",
               "truth_masks": paths[0].parent.parent / "masks"}
    whole = xaicli.run(models["trained"], paths[0].parent, tmp_path / "whole", **options)
    asked = []
    stopped = xaicli.run(models["trained"], paths[0].parent, tmp_path / "parts", **options,
                         stop=lambda: asked.append(1) or ("SIGINT" if len(asked) > 2 else None))
    assert stopped.status == "stopped by SIGINT" and 0 < stopped.done < len(paths)
    resumed = xaicli.run(models["trained"], paths[0].parent, tmp_path / "parts", **options, resume=True)
    assert resumed.counts["resumed"] == stopped.done and whole.exit_status == resumed.exit_status == 0

    def files(out):
        return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".npy")}

    assert files(tmp_path / "whole") == files(tmp_path / "parts")
    assert ((tmp_path / "whole" / "predictions.csv").read_text().replace("whole", "X")
            == (tmp_path / "parts" / "predictions.csv").read_text().replace("parts", "X"))
