"""The `xai` command end to end: outputs, CSV, exit codes, one-line errors, start-up cost."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from xaicli._outputs.table import COLUMNS
from xaicli.cli import main

from .conftest import xai
from .outputs.test_report import _page_data

EXPECTED_COLUMNS = ["input", "status", "error", "note", "pred_index", "pred_label", "pred_prob", "class_index",
                    "class_label", "class_prob", "class_score", "method", "layer", "output"]


def _rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_run_writes_overlays_at_original_size_and_a_csv_row_per_image(tiny_model, image_folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder, "-o", out, "--labels", labels, "--batch-size", 2)
    assert result.exit_code == 1, result.output  # broken.jpg failed, the rest explained
    assert list(COLUMNS) == EXPECTED_COLUMNS
    rows = _rows(out)
    assert [Path(r["input"]).relative_to(image_folder).as_posix() for r in rows] == [
        "a.png", "broken.jpg", "c.webp", "sub/b.JPG"]
    broken = rows[1]
    assert broken["status"] == "error" and "not a readable image" in broken["error"]
    assert broken["output"] == "" and broken["pred_index"] == ""
    for row in (rows[0], rows[2], rows[3]):
        assert row["status"] == "ok" and row["error"] == ""
        assert row["method"] == "gradcam" and row["layer"] == "conv_b"
        assert row["pred_label"] == ["red", "green", "blue"][int(row["pred_index"])]
        assert row["class_index"] == row["pred_index"] and 0 < float(row["pred_prob"]) <= 1
        assert len(row["pred_prob"].split(".")[1]) == 6
        source = Image.open(row["input"])
        overlay = Image.open(row["output"])
        assert overlay.size == source.size and overlay.mode == "RGB"
    assert (out / "sub" / "b.JPG.gradcam.png").exists()
    assert "3 of 4 images explained, 1 failed" in result.stderr


def test_all_good_images_exit_zero_and_runs_are_byte_identical(tiny_model, image_folder, tmp_path):
    (image_folder / "broken.jpg").unlink()
    outputs = []
    for name in ("first", "second"):
        result = xai("run", tiny_model, image_folder, "-o", tmp_path / name, "-q")
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        outputs.append({p.relative_to(tmp_path / name): p.read_bytes()
                        for p in sorted((tmp_path / name).rglob("*")) if p.is_file()})
    first, second = outputs
    assert first.keys() == second.keys() and len(first) == 3 + 3 + 3  # overlays, thumbnails, run files
    run_files = ("predictions.csv", "run.json", "index.html")
    assert all(first[k] == second[k] for k in first if k.name not in run_files)
    for name in run_files:  # equal but for the output folder's name and the timing
        texts = [files[Path(name)].decode().replace(str(tmp_path / run), "OUT")
                 for files, run in ((first, "first"), (second, "second"))]
        texts = [re.sub(r'"seconds": ?[0-9.]+', '"seconds": S', t) for t in texts]
        assert texts[0] == texts[1]


def test_class_option_explains_the_requested_class(tiny_model, image_folder, tmp_path):
    result = xai("run", tiny_model, image_folder / "a.png", "-o", tmp_path / "out", "--class", "2", "-q")
    assert result.exit_code == 0, result.output
    (row,) = _rows(tmp_path / "out")
    assert row["class_index"] == "2"


def test_several_methods_give_one_overlay_and_one_row_each(tiny_model, image_folder, tmp_path):
    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder / "a.png", "-o", out, "--method", "layercam,saliency,gradcam", "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["layercam", "saliency", "gradcam"]  # as asked, across families
    assert len({r["pred_prob"] for r in rows}) == 1  # one forward pass serves all methods
    for row in rows:
        assert row["output"] == str(out / f"a.png.{row['method']}.png") and Path(row["output"]).exists()


@pytest.mark.parametrize("args,message", [
    (["MISSING", "IMAGES"], "model file not found"),
    (["MODEL", "IMAGES", "--layer", "nope"], "layer 'nope' not found; candidates: conv_a, conv_b"),
    (["MODEL", "IMAGES", "--class", "7"], "--class 7 is out of range: the model has 3 classes"),
    (["MODEL", "EMPTY"], "no images found"),
    (["MODEL", "IMAGES", "--method", "nope"], "unknown method 'nope'"),
])
def test_usage_and_model_errors_are_one_line_with_exit_2(tiny_model, image_folder, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    names = {"MODEL": tiny_model, "MISSING": tmp_path / "missing.keras",
             "IMAGES": image_folder, "EMPTY": tmp_path / "empty"}
    result = xai("run", *[names.get(a, a) for a in args], "-o", tmp_path / "out")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xai: error: ") and message in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option,value", [("--preprocess", "weird"), ("--input-size", "big")])
def test_bad_option_value_is_a_click_usage_error(tiny_model, image_folder, tmp_path, option, value):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", option, value)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.stderr


def test_layers_command_marks_the_auto_choice(variant_models):
    result = xai("layers", variant_models["nested.keras"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(l.startswith("*") and "base/conv_b" in l and "Conv2D" in l and "(None, 12, 12, 6)" in l
               for l in lines)
    assert any("base/conv_a" in l and not l.startswith("*") for l in lines)
    everything = xai("layers", variant_models["nested.keras"], "--all").stdout
    assert "gap" in everything and "GlobalAveragePooling2D" in everything


def test_methods_lists_the_registry():
    result = xai("methods")
    assert result.exit_code == 0 and "gradcam" in result.stdout and "Selvaraju" in result.stdout


def test_help_and_methods_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from xaicli.cli import main\n"
        "for args in (['--help'], ['run', '--help'], ['methods']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_wrong_model_path_is_told_before_tensorflow_loads(tmp_path, image_folder):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "folder").mkdir()
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from xaicli.cli import main\n"
        f"model, images, folder, text = {str(tmp_path / 'missing.keras')!r}, {str(image_folder)!r}, "
        f"{str(tmp_path / 'folder')!r}, {str(tmp_path / 'notes.txt')!r}\n"
        "for args, said in [(['run', model, images, '-o', folder + '/out'], 'model file not found'),\n"
        "                   (['info', model], 'model file not found'), (['layers', folder], 'not a SavedModel'),\n"
        "                   (['sanity', text, images, '-o', folder + '/s'],\n"
        "                    'format (.txt); give a .keras or .h5 file, or a SavedModel folder'),\n"
        "                   (['run', model, images, '-o', folder, '--labels', 'no.txt'], '--labels no.txt: no such')]:\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    assert result.exit_code == 2 and said in result.stderr, (args, result.stderr)\n"
        "    assert len(result.stderr.strip().splitlines()) == 1\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "xaicli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("xai, version")


def test_gradient_methods_need_no_convolutional_layer(image_folder, tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((12, 12, 3))
    keras.Model(inputs, layers.Dense(2)(layers.Flatten()(inputs))).save(tmp_path / "mlp.keras")
    out = tmp_path / "out"
    result = xai("run", tmp_path / "mlp.keras", image_folder / "a.png", "-o", out,
                  "--method", "saliency,integrated-gradients", "--ig-steps", 4)
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [(r["method"], r["layer"]) for r in rows] == [("saliency", "input"), ("integrated-gradients", "input")]
    assert Image.open(rows[0]["output"]).size == (40, 30)  # full-resolution map on the original
    assert "input gradients" in result.stderr
    cam = xai("run", tmp_path / "mlp.keras", image_folder / "a.png", "-o", tmp_path / "cam", "--method", "gradcam")
    assert cam.exit_code == 2 and "no layer of this model outputs a feature map" in cam.stderr


def test_config_file_fills_options_and_the_command_line_wins(tiny_model, image_folder, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'out = "{tmp_path / "from_config"}"\nmethod = ["gradcam", "saliency"]\nclass = 1\nbatch_size = 2\n')
    result = xai("run", tiny_model, image_folder / "a.png", "-c", config, "--class", "2", "-q")
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "from_config")
    assert [r["method"] for r in rows] == ["gradcam", "saliency"]  # from the file
    assert {r["class_index"] for r in rows} == {"2"}  # the command line wins


@pytest.mark.parametrize("content,message", [
    ("batchsize = 3\n", "unknown key 'batchsize'; keys are the long options of `xai run`: alpha, background, batch-size"),
    ('batch-size = "many"\n', "key 'batch-size': 'many' is not a valid integer"),
    ('preprocess = "magic"\n', "key 'preprocess': 'magic' is not one of"),
    ("batch-size = [\n", "is not valid TOML"),
    ("[run]\nalpha = 0.3\n", "[run] tables are not used"),
])
def test_config_file_errors_name_the_key_and_the_file(tiny_model, image_folder, tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = xai("run", tiny_model, image_folder, "-c", config, "-o", tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"xai: error: config file {config}") and message in line


def test_missing_output_folder_is_a_usage_error(tiny_model, image_folder):
    result = xai("run", tiny_model, image_folder)
    assert result.exit_code == 2 and "no output folder: give -o/--out" in result.stderr


@pytest.mark.parametrize("name", ["default.toml", "imagenet.toml", "medical-grayscale.toml"])
def test_shipped_configs_run(tiny_model, image_folder, tmp_path, name):
    from .conftest import REPO

    (image_folder / "broken.jpg").unlink()
    result = xai("run", tiny_model, image_folder / "a.png", "-c", REPO / "configs" / name, "-o", tmp_path / "out",
                  "--ig-steps", 2, "--smoothgrad-samples", 2, "-q")
    assert result.exit_code == 0, result.output


def test_run_manifest_records_versions_model_hash_choices_options_and_counts(tiny_model, image_folder, tmp_path):
    import hashlib
    import json

    import keras
    import tensorflow as tf

    from xaicli import __version__

    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder, "-o", out, "--batch-size", 3, "--method", "gradcam,saliency", "-q")
    assert result.exit_code == 1
    manifest = json.loads((out / "run.json").read_text())
    volatile = manifest.pop("seconds")
    assert isinstance(volatile, float) and volatile >= 0
    assert manifest["tool"] == {"name": "xaicli", "version": __version__}
    assert (manifest["tensorflow"], manifest["keras"]) == (tf.__version__, keras.__version__)
    assert manifest["model"] == {"path": str(tiny_model), "format": "Keras 3 (.keras)",
                                 "sha256": hashlib.sha256(tiny_model.read_bytes()).hexdigest()}
    assert manifest["resolved"] == {
        "layer": "conv_b", "layer_reason": "auto: the last convolution: every path to the output passes here",
        "attention_layers": [], "explained_output": "head",
        "output_choice": "the model's only output", "kind": "classifier", "kind_reason": "a softmax over 3 classes",
        "final_activation": "softmax", "classes": 3, "preprocess": "none", "preprocess_reason": "the model rescales inside: rescale",
        "target_class": None}
    assert manifest["options"]["batch_size"] == 3 and manifest["options"]["methods"] == ["gradcam", "saliency"]
    assert manifest["options"]["out_dir"] == str(out) and manifest["options"]["inputs"] == [str(image_folder)]
    assert manifest["counts"] == {"images": 4, "explained": 3, "failed": 1, "skipped": 0, "resumed": 0}
    text = (out / "run.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # stable formatting


def test_inputs_from_stdin_and_table_on_stdout(tiny_model, image_folder, tmp_path):
    listed = f"{image_folder / 'a.png'}\n\n{image_folder / 'sub' / 'b.JPG'}\n"
    result = CliRunner().invoke(main, ["run", str(tiny_model), "-", "-o", str(tmp_path / "out"), "--predictions", "-"],
                                input=listed)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))  # stdout holds the table and nothing else
    assert [Path(r["input"]).name for r in rows] == ["a.png", "b.JPG"]
    assert list(rows[0]) == EXPECTED_COLUMNS
    assert "images explained" in result.stderr  # the summary stays on stderr
    assert not (tmp_path / "out" / "predictions.csv").exists()
    # the page follows the table: the run keeps its rows in OUT for it
    assert (tmp_path / "out" / ".predictions.csv").read_text(encoding="utf-8") == result.stdout
    page = _page_data(tmp_path / "out" / "index.html")
    assert [Path(card["input"]).name for card in page["cards"]] == ["a.png", "b.JPG"]
    assert page["run"]["table"] == ""  # said as standard output


def test_jsonl_table_has_the_columns_in_order_and_stable_numbers(tiny_model, image_folder, tmp_path):
    import json

    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder, "-o", out, "--format", "jsonl", "-q")
    assert result.exit_code == 1
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [list(r) for r in records] == [EXPECTED_COLUMNS] * 4
    broken = records[1]
    assert broken["status"] == "error" and broken["pred_prob"] is None and broken["output"] is None
    ok = records[0]
    assert isinstance(ok["pred_index"], int) and isinstance(ok["pred_prob"], float)
    assert all(len(repr(ok[k]).split(".")[1]) <= 6 for k in ("pred_prob", "class_prob", "class_score"))


def test_save_writes_every_kind_and_the_csv_points_at_the_first(tiny_model, image_folder, tmp_path):
    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder / "a.png", "-o", out, "--save", "panel,overlay,heatmap,raw",
                  "--labels", _labels(tmp_path), "--colormap", "viridis", "-q")
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)
    assert row["output"] == str(out / "a.png.gradcam.panel.png")
    source = Image.open(image_folder / "a.png")
    heat = Image.open(out / "a.png.gradcam.heatmap.png")
    assert heat.mode == "L" and heat.size == source.size
    raw = np.load(out / "a.png.gradcam.npy")
    assert raw.dtype == np.float32 and raw.shape == (12, 12) and raw.min() >= 0 and raw.max() == 1.0
    assert Image.open(out / "a.png.gradcam.panel.png").size == (3 * source.width, source.height + 16)
    assert Image.open(out / "a.png.gradcam.png").size == source.size


def test_unknown_save_kind_is_a_usage_error(tiny_model, image_folder, tmp_path):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--save", "overlay,movie")
    assert result.exit_code == 2 and "--save overlay,movie: choose from overlay, heatmap, raw, panel" in result.stderr


def _labels(folder: Path) -> Path:
    path = folder / "labels.txt"
    path.write_text("red\ngreen\nblue\n")
    return path


def test_existing_outputs_are_refused_replaced_or_kept(tiny_model, image_folder, tmp_path):
    import json

    (image_folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert xai("run", tiny_model, image_folder, "-o", out, "-q").exit_code == 0
    overlay = out / "a.png.gradcam.png"
    refused = xai("run", tiny_model, image_folder, "-o", out, "-q")
    assert refused.exit_code == 2
    assert "exists and 4 more outputs; pass --overwrite to replace them or --skip-existing" in refused.stderr

    overlay.write_bytes(b"marker")  # an output an earlier run left
    (out / "sub" / "b.JPG.gradcam.png").unlink()  # and one that is missing
    kept = xai("run", tiny_model, image_folder, "-o", out, "--skip-existing")
    assert kept.exit_code == 0, kept.output
    assert "1 of 3 images explained, 2 skipped (outputs already there), 0 failed" in kept.stderr
    assert overlay.read_bytes() == b"marker" and (out / "sub" / "b.JPG.gradcam.png").exists()
    statuses = {Path(r["input"]).name: (r["status"], r["output"]) for r in _rows(out)}
    assert statuses["a.png"] == ("skipped", str(overlay)) and statuses["b.JPG"][0] == "ok"
    assert json.loads((out / "run.json").read_text())["counts"] == {"images": 3, "explained": 1, "failed": 0, "skipped": 2, "resumed": 0}

    replaced = xai("run", tiny_model, image_folder, "-o", out, "--overwrite", "-q")
    assert replaced.exit_code == 0 and overlay.read_bytes().startswith(b"\x89PNG")
    both = xai("run", tiny_model, image_folder, "-o", out, "--overwrite", "--skip-existing")
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_target_topk_explains_each_ranked_class_like_an_explicit_class(tiny_model, image_folder, tmp_path):
    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder, "-o", out, "--top-k", 3, "--target", "topk", "--save", "raw",
                  "--labels", _labels(tmp_path), "-q")
    assert result.exit_code == 1, result.output
    rows = _rows(out)
    columns = list(rows[0])
    assert columns[columns.index("class_score") + 1] == "rank"
    assert columns[len(EXPECTED_COLUMNS) + 1:] == [f"top{r}_{p}" for r in (1, 2, 3) for p in ("index", "label", "prob")]
    by_image = {}
    for row in rows:
        by_image.setdefault(Path(row["input"]).name, []).append(row)
    assert len(by_image["broken.jpg"]) == 3 and all(r["top1_index"] == "" for r in by_image["broken.jpg"])
    assert [r["rank"] for r in by_image["broken.jpg"]] == ["1", "2", "3"]  # which planned output each stands for
    ranked = by_image["a.png"]
    assert [r["rank"] for r in ranked] == ["1", "2", "3"]
    assert [r["class_index"] for r in ranked] == [ranked[0][f"top{k}_index"] for k in (1, 2, 3)]
    assert [Path(r["output"]).name for r in ranked] == [f"a.png.gradcam.top{k}.npy" for k in (1, 2, 3)]
    probabilities = [float(ranked[0][f"top{k}_prob"]) for k in (1, 2, 3)]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-5
    assert ranked[0]["class_index"] == ranked[0]["pred_index"]
    assert ranked[0]["top2_label"] == ["red", "green", "blue"][int(ranked[0]["top2_index"])]
    # the rank-3 map is the map of that class asked for by --class
    third = ranked[2]["class_index"]
    single = tmp_path / "single"
    assert xai("run", tiny_model, image_folder / "a.png", "-o", single, "--class", third, "--save", "raw",
                "-q").exit_code == 0
    np.testing.assert_allclose(np.load(out / "a.png.gradcam.top3.npy"), np.load(single / "a.png.gradcam.npy"), atol=1e-6)


def test_topk_names_sort_by_rank_past_nine_classes():
    from xaicli._explain.targets import BEST, GivenClass, targets_of

    tags = [target.tag for target in targets_of("topk", 14, None)]
    assert tags[:2] == ["top01", "top02"] and tags[-1] == "top14" and sorted(tags) == tags
    assert [target.rank for target in targets_of("topk", 14, None)] == list(range(1, 15))
    assert [target.tag for target in targets_of("topk", 3, None)] == ["top1", "top2", "top3"]
    assert targets_of("predicted", 0, None) == (BEST,) and targets_of("predicted", 5, 2) == (GivenClass(2),)
    assert BEST.tag == GivenClass(2).tag == "" and BEST.rank is None


@pytest.mark.parametrize("args, message", [
    (["--target", "topk"], "--target topk explains each of the --top-k classes: give --top-k K"),
    (["--target", "topk", "--top-k", "2", "--class", "1"], "and no --class"),
    (["--top-k", "4"], "--top-k 4 is more than the model's 3 classes"),
    (["--top-k", "-1"], "--top-k must be 0 or more"),
])
def test_top_k_errors(tiny_model, image_folder, tmp_path, args, message):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_crop_overlay_covers_the_original_and_leaves_unseen_sides_untouched(tiny_model, image_folder, tmp_path):
    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder / "a.png", "-o", out, "--resize", "crop", "--alpha", 1.0, "-q")
    assert result.exit_code == 0, result.output
    source = np.asarray(Image.open(image_folder / "a.png").convert("RGB"))  # 30 x 40; the model saw columns 5..35
    overlay = np.asarray(Image.open(out / "a.png.gradcam.png"))
    assert overlay.shape == source.shape
    np.testing.assert_array_equal(overlay[:, :5], source[:, :5])
    np.testing.assert_array_equal(overlay[:, 35:], source[:, 35:])
    assert (overlay[:, 5:35] != source[:, 5:35]).any()


def test_the_predicted_class_is_the_top_score_even_where_probabilities_tie():
    """Nearly tied logits can round to equal float32 probabilities; the row's predicted class is
    then the one the top-class explanation explains, not the first of the tie."""
    from xaicli._explain.explainer import BatchExplanation
    from xaicli._runs.rows import predicted_class

    explanation = BatchExplanation(probabilities=np.full((1, 4), 0.25, np.float32),
                                   scores=np.array([[0.0, 0.0, 1e-7, 0.0]], np.float32),
                                   classes=np.array([2]), maps={})
    assert predicted_class(explanation, 0) == 2


def test_image_format_and_max_size_name_size_and_record_the_outputs(tiny_model, image_folder, tmp_path):
    import json

    from PIL import Image

    out = tmp_path / "out"
    result = xai("run", tiny_model, image_folder, "-o", out, "--image-format", "jpeg", "--max-size", 24,
                  "--save", "overlay,heatmap,panel,raw", "-q")
    assert result.exit_code == 1, result.output  # the folder's broken image
    overlay = Image.open(out / "sub" / "b.JPG.gradcam.jpg")  # 20 x 50 -> long side 24, aspect kept
    assert overlay.format == "JPEG" and overlay.size == (10, 24)
    assert Image.open(out / "sub" / "b.JPG.gradcam.heatmap.jpg").size == (10, 24)
    assert Image.open(out / "a.png.gradcam.panel.jpg").size[0] == 3 * 24
    assert Image.open(out / "c.webp.gradcam.jpg").size == (16, 16)  # smaller than the cap: as it is
    assert (out / "a.png.gradcam.npy").exists()
    options = json.loads((out / "run.json").read_text())["options"]
    assert (options["image_format"], options["max_size"]) == ("jpeg", 24)
    again = xai("run", tiny_model, image_folder, "-o", out, "--resume", "--image-format", "webp", "--max-size", 24,
                 "--save", "overlay,heatmap,panel,raw")
    assert again.exit_code == 2 and "used other settings (image_format)" in again.stderr


def test_a_16_bit_scan_is_windowed_as_asked_and_the_table_and_run_json_say_so(tiny_model, tmp_path):
    from PIL import Image

    scans = tmp_path / "scans"
    scans.mkdir()
    Image.fromarray(np.linspace(100, 3000, 64 * 48).reshape(48, 64).astype(np.uint16)).save(scans / "mri.png")
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(scans / "photo.png")
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out, "--intensity", "window:1000,800", "-q")
    assert result.exit_code == 0, result.output
    notes = {Path(row["input"]).name: row["note"] for row in _rows(out)}
    assert notes == {"mri.png": "intensity: window 1000,800", "photo.png": ""}
    assert json.loads((out / "run.json").read_text())["options"]["intensity"] == "window:1000,800"
    overlay = np.asarray(Image.open(out / "mri.png.gradcam.png").convert("L"), np.float64)
    assert overlay.shape == (48, 64)
    bad = xai("run", tiny_model, scans, "-o", tmp_path / "other", "--intensity", "window:1000")
    assert bad.exit_code == 2 and "--intensity" in bad.output


def test_dicom_runs_and_no_patient_data_reaches_any_output(tiny_model, tmp_path):
    pytest.importorskip("pydicom")
    from .inputs.test_dicom import write_dicom

    scans = tmp_path / "scans"
    scans.mkdir()
    stored = (np.arange(48 * 64).reshape(48, 64) % 2000).astype(np.uint16)
    write_dicom(scans / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out, "--save", "overlay,heatmap,raw,panel", "--labels",
                  _labels(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    (row,) = _rows(out)
    assert row["status"] == "ok" and row["note"] == "intensity: window 40,400"
    written = [path for path in out.rglob("*") if path.is_file()]
    assert {path.name for path in written} >= {"ct.dcm.gradcam.png", "ct.dcm.gradcam.panel.png", "predictions.csv"}
    for path in written:
        content = path.read_bytes()
        for secret in (b"Doe^Jane", b"PID-7731", b"19610412"):  # long enough never to occur by chance
            assert secret not in content, f"{secret!r} in {path.name}"
