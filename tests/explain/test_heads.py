"""Heads other than a softmax classifier: the output's kind told and said, multi-label models
explained label by label, regression values explained as values. Rows are checked against the
model's own outputs, maps against a GradientTape reference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ..conftest import xai

SIDE = 16


def _cnn_head(units: int, activation: str | None, seed: int):
    """A small CNN ('conv' is the last convolution) ending in ``units`` Dense units."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIDE, SIDE, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(units, activation=activation, name="head")(x))


@pytest.fixture(scope="module")
def heads(tmp_path_factory, pictures):
    """name -> saved model: multi-label (4 sigmoid units), regression with 1 and 3 linear units.
    The multi-label head reads the features standardized over ``pictures``, so each picture has
    its own labels present (an untrained CNN's features differ little from image to image)."""
    import keras

    folder = tmp_path_factory.mktemp("heads")
    built = {"multilabel": _cnn_head(4, "sigmoid", 1), "value": _cnn_head(1, None, 2), "values": _cnn_head(3, None, 3)}
    head = built["multilabel"].get_layer("head")
    features = keras.Model(built["multilabel"].inputs, head.input)(_inputs(pictures)).numpy()
    kernel = np.random.default_rng(4).normal(size=(features.shape[1], 4)) / (features.std(axis=0)[:, None] + 1e-6)
    head.kernel.assign(kernel)
    head.bias.assign(-features.mean(axis=0) @ kernel)
    paths = {}
    for name, model in built.items():
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Six 16x16 RGB images at the model's size (no resizing between file and model)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(5)
    for index in range(6):
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        pixels[index:index + 6, 2 * index % 10:2 * index % 10 + 6] = 255
        Image.fromarray(pixels).save(folder / f"p{index}.png")
    return folder


def _inputs(folder):
    """The pictures as the model sees them with --preprocess unit: (n, 16, 16, 3) in 0..1, sorted by name."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(path), np.float32) / 255.0 for path in sorted(folder.glob("*.png"))])


def _rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _gradcam_reference(model, images, units, sign=1.0):
    """Grad-CAM of ``sign`` x each image's output unit (``units``, its pre-activation logit) at layer 'conv', by
    GradientTape: ReLU(sum_k mean(dy/dA_k) A_k), min-max normalized per image."""
    import keras
    import tensorflow as tf

    head = model.get_layer("head")
    features = keras.Model(model.inputs, model.get_layer("conv").output)
    with tf.GradientTape() as tape:
        activations = features(images)
        tape.watch(activations)
        logits = tf.matmul(tf.reduce_mean(activations, axis=(1, 2)), head.kernel) + head.bias
        score = sign * tf.gather(logits, np.asarray(units), batch_dims=1)
    gradients = tape.gradient(score, activations).numpy()
    cam = np.maximum((gradients.mean(axis=(1, 2), keepdims=True) * activations.numpy()).sum(-1), 0)
    low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
    return np.where(high > low, (cam - low) / np.where(high > low, high - low, 1), 0)


def test_each_kind_is_told_and_said(heads, tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((SIDE, SIDE, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="conv")(inputs))
    extra = {"softmax": layers.Dense(3, activation="softmax")(x), "binary": layers.Dense(1, activation="sigmoid")(x),
             "logits": layers.Dense(5)(x)}
    for name, output in extra.items():
        keras.Model(inputs, output).save(tmp_path / f"{name}.keras")
    expected = {heads["multilabel"]: ("multilabel", "4 sigmoid units"), heads["value"]: ("regression", "one linear unit"),
                heads["values"]: ("classifier", "3 linear units, taken as a classifier's logits (--kind multilabel or "
                                                "regression if they are not)"),
                tmp_path / "softmax.keras": ("classifier", "a softmax over 3 classes"),
                tmp_path / "binary.keras": ("binary", "one sigmoid unit"),
                tmp_path / "logits.keras": ("classifier", "5 linear units, taken as a classifier's logits "
                                                          "(--kind multilabel or regression if they are not)")}
    for path, (kind, reason) in expected.items():
        data = json.loads(xai("info", path, "--json").stdout)
        assert (data["kind"], data["kind_reason"]) == (kind, reason), path
        assert data["outputs"][0]["kind"] == kind
    overridden = json.loads(xai("info", heads["values"], "--json", "--kind", "regression").stdout)
    assert (overridden["kind"], overridden["kind_reason"]) == ("regression", "as requested (--kind)")
    assert "multilabel, can be explained" in xai("info", heads["multilabel"]).stdout


@pytest.mark.parametrize("args, message", [
    (["--kind", "binary"], "--kind binary: the explained output is (N, 3) with a linear activation; a binary output "
                           "is one unit (a sigmoid, or its logit)"),
    (["--kind", "segmentation"], "--kind segmentation: the explained output is (N, 3) with a linear activation; "
                                 "a segmentation output is (N, H, W, C)"),
    (["--threshold", "1.5"], "--threshold must be between 0 and 1, got 1.5"),
    (["--sign", "negative"], "--sign says which way a regression's value is explained; this model's output is "
                             "classifier (3 linear units, taken as a classifier's logits"),
    (["--target", "positive"], "--target positive goes with a multi-label model (several sigmoid units, or "
                               "sigmoid channels of a segmentation); this model's output is classifier"),
    (["--kind", "regression", "--top-k", "2"], "--top-k ranks classes by probability; this model's output is "
                                               "regression (as requested (--kind)): explain one of its values with --class"),
    (["--kind", "regression", "--metrics", "deletion"], "--metrics deletion follow a class's probability; this "
                                                        "model's output is regression"),
])
def test_options_that_do_not_fit_the_kind_are_one_line(heads, pictures, tmp_path, args, message):
    result = xai("run", heads["values"], pictures, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert not (tmp_path / "out").exists()


def test_multilabel_explains_every_label_over_the_threshold(heads, pictures, tmp_path):
    import keras

    model = keras.models.load_model(heads["multilabel"])
    probabilities = model(_inputs(pictures)).numpy()
    maxima = np.sort(probabilities.max(axis=1))
    threshold = float((maxima[0] + maxima[1]) / 2)  # the image with the lowest best label has none present
    labels = ["Atelectasis", "Pleural Effusion", "Edema", "Mass"]
    (tmp_path / "labels.txt").write_text("\n".join(labels))
    out = tmp_path / "out"
    result = xai("run", heads["multilabel"], pictures, "-o", out, "--preprocess", "unit", "--threshold", str(threshold),
                 "--labels", tmp_path / "labels.txt", "--save", "overlay,raw", "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    tags = ["Atelectasis", "Pleural_Effusion", "Edema", "Mass"]
    expected_rows = 0
    for index, path in enumerate(sorted(pictures.glob("*.png"))):
        present = np.flatnonzero(probabilities[index] >= threshold)
        mine = [r for r in rows if r["input"] == str(path)]
        assert [r["positive"] for r in mine] == [";".join(labels[i] for i in present)] * max(1, len(present))
        for row in mine:
            assert [float(row[f"prob_{label}"]) for label in labels] == pytest.approx(probabilities[index], abs=2e-6)
        if not len(present):
            (row,) = mine
            assert row["class_index"] == "" and row["output"] == "" and row["status"] == "ok"
            assert row["note"] == f"no label reached the threshold {threshold:g}: nothing to explain"
            assert not list(out.glob(f"{path.name}.gradcam*"))
            continue
        assert [int(r["class_index"]) for r in mine] == list(present)
        expected_rows += len(present)
        reference = _gradcam_reference(model, _inputs(pictures)[[index] * len(present)], list(present))
        for row, label, each in zip(mine, present, reference):
            assert row["class_label"] == labels[label] and float(row["class_prob"]) == pytest.approx(
                probabilities[index, label], abs=2e-6)
            assert row["output"].endswith(f"{path.name}.gradcam.{tags[label]}.png")
            np.testing.assert_allclose(np.load(out / f"{path.name}.gradcam.{tags[label]}.npy"), each, atol=1e-4)
    assert expected_rows > 5  # an image with several labels
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["resolved"]["kind"] == "multilabel" and manifest["resolved"]["threshold"] == threshold


def test_multilabel_true_labels_give_per_label_scores_and_gates(heads, pictures, tmp_path):
    import keras

    probabilities = keras.models.load_model(heads["multilabel"])(_inputs(pictures)).numpy()
    present = probabilities >= 0.5
    truth = present.copy()
    truth[0, 0] = not truth[0, 0]  # one label wrong on the first image
    names = sorted(pictures.glob("*.png"))
    with open(tmp_path / "truth.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        for path, row in zip(names, truth):
            writer.writerow([path.name, ";".join(str(i) for i in np.flatnonzero(row))] if row.any() else [])
    labelled = [row.any() for row in truth]
    out = tmp_path / "out"
    result = xai("run", heads["multilabel"], pictures, "-o", out, "--preprocess", "unit", "--true-labels",
                 tmp_path / "truth.csv", "--require", "f1>=0.99", "--format", "jsonl", "--summary", tmp_path / "s.md")
    assert result.exit_code == 3, result.output  # the one wrong label keeps macro F1 under 0.99
    accuracy = json.loads((out / "run.json").read_text())["accuracy"]
    tp = (present & truth)[labelled].sum(axis=0)
    fp = (present & ~truth)[labelled].sum(axis=0)
    fn = (~present & truth)[labelled].sum(axis=0)
    seen = (tp + fp + fn) > 0
    f1 = [2 * t / (2 * t + p + n) for t, p, n in zip(tp[seen], fp[seen], fn[seen])]
    assert accuracy["images"] == sum(labelled)
    assert accuracy["correct"] == sum(labelled) - 1
    assert accuracy["f1"] == pytest.approx(np.mean(f1), abs=1e-6)
    assert {label: scores["support"] for label, scores in accuracy["labels"].items()} == {
        str(i): int(tp[i] + fn[i]) for i in np.flatnonzero(seen)}
    assert "f1>=0.99 not met" in result.stderr
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert set(records[0]["probs"]) == {"0", "1", "2", "3"}
    first = [r for r in records if r["input"] == str(names[0])]
    assert all(r["correct"] is False for r in first)
    summary = (tmp_path / "s.md").read_text()
    assert "| label | precision | recall | F1 | images |" in summary


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_regression_rows_carry_the_values_and_maps_explain_the_value(heads, pictures, tmp_path, sign):
    import keras

    model = keras.models.load_model(heads["values"])
    values = model(_inputs(pictures)).numpy()
    out = tmp_path / "out"
    args = ["--sign", "negative"] if sign < 0 else []
    result = xai("run", heads["values"], pictures, "-o", out, "--preprocess", "unit", "--kind", "regression",
                 "--class", "2", "--save", "raw,panel", *args, "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(out / "predictions.csv")
    assert [c for c in rows[0] if c.startswith("value")] == ["value_0", "value_1", "value_2"]
    reference = _gradcam_reference(model, _inputs(pictures), [2] * len(values), sign)
    for index, (row, path) in enumerate(zip(rows, sorted(pictures.glob("*.png")))):
        assert [float(row[f"value_{unit}"]) for unit in range(3)] == pytest.approx(values[index], abs=2e-6)
        assert row["pred_prob"] == row["class_prob"] == row["pred_index"] == ""
        assert row["class_index"] == "2" and float(row["class_score"]) == pytest.approx(sign * values[index, 2], abs=2e-5)
        np.testing.assert_allclose(np.load(out / f"{path.name}.gradcam.npy"), reference[index], atol=1e-4)


def test_one_value_is_the_value_column_and_the_caption(heads, pictures, tmp_path):
    import keras
    import xaicli

    model = keras.models.load_model(heads["value"])
    values = model(_inputs(pictures)).numpy()[:, 0]
    out = tmp_path / "out"
    assert xai("run", heads["value"], pictures, "-o", out, "--preprocess", "unit", "-q").exit_code == 0
    rows = _rows(out / "predictions.csv")
    assert [float(r["value"]) for r in rows] == pytest.approx(values, abs=2e-6)
    assert all(r["pred_prob"] == "" and r["class_index"] == "0" for r in rows)
    explanation = xaicli.Explainer(heads["value"], preprocess="unit").explain(sorted(pictures.glob("*.png")))
    assert explanation.predictions[0]["value"] == pytest.approx(values[0], abs=1e-6)
    assert explanation.predictions[0]["pred_prob"] is None
    from xaicli._runs.rows import caption

    explained = explanation._explained[0][0]
    assert caption(explanation._prepared, explained.explanation, explained.index) == f"value {values[0]:.5g}"


def _page_cards(browser, out):
    """The cards of OUT's page, opened in the browser: input, chips, and the per-label table."""
    from xaicli._outputs.report import REPORT_NAME

    from ..conftest import wait_until

    page = browser.new_page(viewport={"width": 1280, "height": 4000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((out / REPORT_NAME).as_uri())
    page.wait_for_load_state("load")
    wait_until(page, "document.querySelectorAll('#gallery .card').length > 0")
    page.select_option("#sort", "path")
    cards = page.eval_on_selector_all("#gallery .card", """cards => cards.map(c => ({input: c.dataset.input,
        chips: [...c.querySelectorAll('.chip')].map(s => s.textContent),
        none: c.querySelector('.chips .none') !== null}))""")
    table = page.eval_on_selector_all("#matrix tr", "rows => rows.map(r => [...r.children].map(c => c.textContent))")
    return page, cards, table, errors


def test_the_page_shows_labels_present_and_per_label_scores(heads, pictures, tmp_path, browser):
    import keras

    probabilities = keras.models.load_model(heads["multilabel"])(_inputs(pictures)).numpy()
    names = sorted(pictures.glob("*.png"))
    with open(tmp_path / "truth.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([path.name, "0;3"] for path in names)
    out = tmp_path / "out"
    assert xai("run", heads["multilabel"], pictures, "-o", out, "--preprocess", "unit", "--threshold", "0.6",
               "--true-labels", tmp_path / "truth.csv", "-q").exit_code == 0
    page, cards, table, errors = _page_cards(browser, out)
    assert errors == []
    for card, path, row in zip(cards, names, probabilities):
        present = np.flatnonzero(row >= 0.6)
        assert card["input"] == str(path)
        assert card["chips"] == [f"{i} {row[i]:.2f}" for i in present] and card["none"] == (not len(present))
    scores = json.loads((out / "run.json").read_text())["accuracy"]["labels"]
    assert table[0] == ["label", "precision", "recall", "F1", "images"]
    assert [r[0] for r in table[1:]] == list(scores)
    assert all(r[4] == str(scores[r[0]]["support"]) for r in table[1:])
    with_zero = [c["input"] for c in cards if "0" in [chip.split()[0] for chip in c["chips"]]]
    page.select_option("#filter-class", "0")
    assert page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => c.dataset.input)") == with_zero
    page.close()


def test_the_page_and_summary_show_the_values(heads, pictures, tmp_path, browser):
    import keras

    values = keras.models.load_model(heads["value"])(_inputs(pictures)).numpy()[:, 0]
    out = tmp_path / "out"
    assert xai("run", heads["value"], pictures, "-o", out, "--preprocess", "unit", "--summary", tmp_path / "s.md",
               "-q").exit_code == 0
    page, cards, _, errors = _page_cards(browser, out)
    assert errors == []
    in_table = [float(f"{value:.6f}") for value in values]  # the page reads the table's six decimals
    assert [card["chips"] for card in cards] == [[f"value {value:.5g}"] for value in in_table]
    page.close()
    summary = (tmp_path / "s.md").read_text()
    assert "| image | values |" in summary and f"value {in_table[0]:.5g}".replace(".", "\\.").replace("-", "\\-") in summary


def test_a_stopped_multilabel_run_resumed_ends_as_a_whole_one(heads, pictures, tmp_path):
    import xaicli

    options = {"preprocess": "unit", "save": ["overlay", "raw"], "batch_size": 2, "report": False}
    whole = xaicli.run(heads["multilabel"], pictures, tmp_path / "whole", **options)
    asked = []
    stopped = xaicli.run(heads["multilabel"], pictures, tmp_path / "parts", **options,
                         stop=lambda: asked.append(1) or ("SIGINT" if len(asked) > 2 else None))
    assert stopped.status == "stopped by SIGINT" and 0 < stopped.done < 6
    with pytest.raises(xaicli.UsageError, match="--skip-existing cannot know which labels"):
        xaicli.run(heads["multilabel"], pictures, tmp_path / "parts", **options, skip_existing=True)
    resumed = xaicli.run(heads["multilabel"], pictures, tmp_path / "parts", **options, resume=True)
    assert resumed.counts["resumed"] == stopped.done and whole.exit_status == resumed.exit_status == 0

    def files(out):
        return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".npy")}

    assert files(tmp_path / "whole") == files(tmp_path / "parts")
    assert ((tmp_path / "whole" / "predictions.csv").read_text().replace("whole", "X")
            == (tmp_path / "parts" / "predictions.csv").read_text().replace("parts", "X"))


@pytest.mark.architectures
def test_a_densenet121_with_fourteen_findings_explains_each_finding_present(tmp_path):
    """CheXNet's shape: DenseNet121 (weights=None) nested as a backbone, average pooling, 14
    sigmoid findings. The labels explained are those over the threshold by the model's own
    probabilities, and each map is Grad-CAM of its finding's logit at the auto layer."""
    import keras
    import tensorflow as tf
    from PIL import Image

    keras.utils.set_random_seed(14)
    backbone = keras.applications.DenseNet121(weights=None, include_top=False, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    findings = keras.layers.Dense(14, activation="sigmoid", name="findings")(
        keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    keras.Model(inputs, findings).save(tmp_path / "chexnet.keras")
    rng = np.random.default_rng(14)
    (tmp_path / "xrays").mkdir()
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "xrays" / f"x{index}.png")
    model = keras.models.load_model(tmp_path / "chexnet.keras")
    images = _inputs(tmp_path / "xrays")
    probabilities = model(images).numpy()
    threshold = float(np.median(probabilities))  # about half the findings of each image present
    out = tmp_path / "out"
    result = xai("run", tmp_path / "chexnet.keras", tmp_path / "xrays", "-o", out, "--preprocess", "unit",
                 "--threshold", str(threshold), "--save", "raw", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["resolved"]["kind"] == "multilabel"
    layer = manifest["resolved"]["layer"]
    assert layer.startswith(f"{backbone.name}/")
    inner = model.get_layer(backbone.name)
    features = keras.Model(inner.inputs, inner.get_layer(layer.split("/", 1)[1]).output)
    head = model.get_layer("findings")
    rows = _rows(out / "predictions.csv")
    for index, path in enumerate(sorted((tmp_path / "xrays").glob("*.png"))):
        present = list(np.flatnonzero(probabilities[index] >= threshold))
        mine = [r for r in rows if r["input"] == str(path)]
        assert [int(r["class_index"]) for r in mine] == present and present
        for unit in present:
            with tf.GradientTape() as tape:
                activations = features(images[index:index + 1])
                tape.watch(activations)
                logit = (tf.matmul(tf.reduce_mean(activations, axis=(1, 2)), head.kernel) + head.bias)[0, unit]
            gradients = tape.gradient(logit, activations).numpy()[0]
            cam = np.maximum((gradients.mean(axis=(0, 1)) * activations.numpy()[0]).sum(-1), 0)
            reference = (cam - cam.min()) / (cam.max() - cam.min())
            np.testing.assert_allclose(np.load(out / f"{path.name}.gradcam.label{unit:02d}.npy"), reference, atol=1e-4)
