"""OUT/index.html: built from a run's files (no TensorFlow for the page itself), then opened from
disk in a real headless Chromium driven by Playwright (the ``browser`` fixture in conftest.py):
nothing leaves OUT, every card shows its overlays, filters and sorts change the cards as they
should, hostile names stay text."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from xaicli._errors import UsageError
from xaicli._outputs.report import REPORT_NAME, write_report
from xaicli.cli import main

from ..conftest import REPO, wait_until as _wait_until

SAMPLES = REPO / "sample_images"
HOSTILE = "<img src=x onerror=alert(1)><b>bold & 'quoted'.png"  # no '/': it could not be a file name


def _page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="xai-data">') + len('<script type="application/json" id="xai-data">')
    return json.loads(text[start:text.index("</script>", start)])


def _fake_run(out: Path, names: list[str]) -> None:
    """An OUT folder as a run leaves it, written by hand: run.json, the table, overlays."""
    out.mkdir()
    (out / "run.json").write_text(json.dumps({
        "model": {"path": "m.keras", "format": "keras", "sha256": "ab" * 32}, "resolved": {"layer": "conv"},
        "options": {"out_dir": str(out), "save": ["overlay", "panel"], "image_format": "png", "table_format": "csv",
                    "predictions": None, "methods": ["gradcam"]},
        "counts": {"images": len(names)}, "status": "complete", "seconds": 1.5}))
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as stream:
        table = csv.writer(stream)
        table.writerow(["input", "status", "error", "note", "pred_index", "pred_label", "pred_prob", "class_index",
                        "class_label", "method", "output"])
        for number, name in enumerate(names):
            overlay = out / f"{name}.gradcam.png"
            Image.fromarray(np.full((300, 600, 3), 40 * number, np.uint8)).save(overlay)
            table.writerow([f"in/{name}", "ok", "", "", 0, "cat", 0.5 + number / 10, 0, "cat", "gradcam", str(overlay)])
        table.writerow(["in/bad.jpg", "error", "cannot decode image: </script><script>alert(3)</script>", "", "", "", "",
                        "", "", "gradcam", ""])


def test_the_page_carries_its_data_as_inert_json_and_makes_missing_thumbnails(tmp_path):
    out = tmp_path / "out"
    _fake_run(out, ["a.png", HOSTILE, "100% #1?.png"])
    page = write_report(out)
    text = page.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img src=x" not in text and "</script><script>" not in text
    data = _page_data(page)
    cards = {card["input"]: card for card in data["cards"]}
    assert set(cards) == {"in/a.png", f"in/{HOSTILE}", "in/100% #1?.png", "in/bad.jpg"}
    assert cards["in/bad.jpg"]["status"] == "error" and "</script><script>alert(3)" in cards["in/bad.jpg"]["errors"][0]
    odd = cards["in/100% #1?.png"]["maps"][0]
    assert odd["full"] == "100%25%20%231%3F.png.gradcam.png"  # a relative URL that names the file
    assert odd["panel"] == "100%25%20%231%3F.png.gradcam.panel.png" and odd["thumb"].startswith(".thumbs/")
    with Image.open(out / ".thumbs" / "a.png.gradcam.jpg") as thumbnail:
        assert thumbnail.size == (256, 128)  # made from the overlay, the long side 256
    assert data["run"]["sha256"] == "ab" * 32 and data["run"]["counts"] == {"images": 3}


def test_report_needs_a_run_folder(tmp_path):
    with pytest.raises(UsageError, match="holds no run to report on"):
        write_report(tmp_path)
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no run to report on" in result.output


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """The demo model on the sample images, a copy under a hostile name, and a broken file."""
    root = tmp_path_factory.mktemp("report")
    images = root / "images"
    shutil.copytree(SAMPLES / "shapes", images / "shapes")
    shutil.copy(SAMPLES / "shapes" / "00_ellipse.png", images / HOSTILE)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    truth = root / "truth.csv"  # each shape's class from its name; the hostile ellipse called a triangle
    truth.write_text("path,label\n" + "".join(f"images/shapes/{name},{name[3:-4]}\n" for name in
                                               sorted(p.name for p in (SAMPLES / "shapes").glob("*.png")))
                     + f'"images/{HOSTILE}",triangle\n', encoding="utf-8")
    out = root / "out"
    result = CliRunner().invoke(main, ["run", str(SAMPLES / "demo_model.keras"), str(images), "-o", str(out),
                                       "-m", "gradcam,hirescam", "--labels", str(SAMPLES / "labels.txt"),
                                       "--save", "overlay,panel", "--true-labels", str(truth),
                                       "--summary", str(root / "summary.md")])
    assert result.exit_code == 1, result.output  # the broken file
    assert re.search(r"accuracy \d+\.\d% \(\d+ of 13 labelled images\)", result.output), result.output
    return out


def test_a_run_writes_the_page_and_a_thumbnail_per_map(demo_run):
    data = _page_data(demo_run / REPORT_NAME)
    assert len(data["cards"]) == 14  # 12 shapes, the hostile copy, the broken file
    for card in data["cards"]:
        if card["status"] == "ok":
            assert [m["method"] for m in card["maps"]] == ["gradcam", "hirescam"]
            assert all((demo_run / m["thumb"]).exists() for m in card["maps"] if "%" not in m["thumb"])
    assert len(list((demo_run / ".thumbs").rglob("*.jpg"))) == 13 * 2


@pytest.fixture()
def opened(browser, demo_run):
    """The demo run's page opened from disk, tall enough that every lazy image loads, with what
    it logged, requested and tried to pop up."""
    page = browser.new_page(viewport={"width": 1280, "height": 9000})
    seen = {"errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda message: message.type == "error" and seen["errors"].append(message.text))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("dialog", lambda dialog: (seen["dialogs"].append(dialog.message), dialog.dismiss()))
    page.goto((demo_run / REPORT_NAME).as_uri())
    page.wait_for_load_state("load")
    _wait_until(page, "[...document.images].every(image => image.complete)")
    yield page, seen
    page.close()


def _cards(page) -> list[dict]:
    return page.eval_on_selector_all("#gallery .card", """cards => cards.map(c => ({input: c.dataset.input,
        status: c.dataset.status, label: c.dataset.label, truth: c.dataset.truth,
        prob: c.dataset.prob ? Number(c.dataset.prob) : null,
        widths: [...c.querySelectorAll('img')].map(i => i.naturalWidth)}))""")


def test_the_page_loads_everything_from_out_and_nothing_else(opened, demo_run):
    page, seen = opened
    assert seen["errors"] == [] and seen["dialogs"] == []
    inside = demo_run.resolve().as_uri()
    assert seen["requests"] and all(url.startswith(inside) for url in seen["requests"]), seen["requests"]
    cards = _cards(page)
    assert len(cards) == 14
    for card in cards:
        if card["status"] == "ok":
            assert len(card["widths"]) == 2 and min(card["widths"]) > 0, card["input"]


def test_filters_and_sorts_change_the_cards(opened):
    page, _ = opened
    everything = _cards(page)
    probabilities = [c["prob"] for c in everything if c["prob"] is not None]
    assert probabilities == sorted(probabilities)  # least confident first, by default
    page.select_option("#sort", "confidence-desc")
    assert [c["prob"] for c in _cards(page) if c["prob"] is not None] == sorted(probabilities, reverse=True)
    page.select_option("#sort", "path")
    assert [c["input"] for c in _cards(page)] == sorted(c["input"] for c in everything)
    for label in ("ellipse", "rectangle", "triangle"):
        page.select_option("#filter-class", label)
        shown = _cards(page)
        assert {c["input"] for c in shown} == {c["input"] for c in everything if c["label"] == label} and shown
    page.select_option("#filter-class", "")
    page.select_option("#filter-status", "error")
    assert [Path(c["input"]).name for c in _cards(page)] == ["broken.jpg"]
    page.select_option("#filter-status", "")
    page.fill("#filter-text", "03_ELL")
    assert [Path(c["input"]).name for c in _cards(page)] == ["03_ellipse.png"]
    assert page.inner_text("#shown") == "showing 1 of 1 images (14 in all)"
    assert "broken.jpg" in page.inner_text("#failed") and "not a readable image" in page.inner_text("#failed")


def test_a_hostile_file_name_is_shown_as_text(opened):
    page, seen = opened
    page.fill("#filter-text", "onerror")
    (card,) = page.query_selector_all("#gallery .card")
    assert card.query_selector(".path").inner_text().endswith(HOSTILE)
    assert page.evaluate("document.querySelectorAll('script').length") == 2  # the page's own two
    assert seen["dialogs"] == []


def test_a_screenshot_of_the_page_is_not_blank(opened, tmp_path):
    page, _ = opened
    page.set_viewport_size({"width": 1280, "height": 900})
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.std() > 20 and len(np.unique(pixels)) > 50  # text, cards and heatmaps, not one colour


def test_true_labels_give_columns_accuracy_and_a_confusion_matrix_that_agree(demo_run):
    with open(demo_run / "predictions.csv", newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row["method"] == "gradcam"]
    labelled = [row for row in rows if row["status"] == "ok"]
    assert all(row["correct"] == ("true" if row["pred_label"] == row["true_label"] else "false") for row in labelled)
    hostile = next(row for row in rows if row["input"].endswith(HOSTILE))
    assert hostile["true_label"] == "triangle" and hostile["correct"] == "false"  # it is an ellipse
    accuracy = json.loads((demo_run / "run.json").read_text())["accuracy"]
    assert accuracy["images"] == len(labelled) == 13
    assert accuracy["correct"] == sum(row["correct"] == "true" for row in labelled)
    classes = accuracy["classes"]
    for true_index, true in enumerate(classes):
        for predicted_index, predicted in enumerate(classes):
            expected = sum(row["true_label"] == true and row["pred_label"] == predicted for row in labelled)
            assert accuracy["confusion"][true_index][predicted_index] == expected


def test_the_job_summary_lists_misclassified_images_first_as_escaped_links(demo_run):
    text = (demo_run.parent / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("### xai: 13 of 14 images explained, 1 failed")
    assert "**Accuracy " in text and "labelled images)" in text
    table = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(table) == 10 and "&lt;img src=x onerror=alert\\(1\\)&gt;" in table[0] and table[0].endswith("✗ |")
    assert "<img" not in text
    link = re.search(r"\]\((out/[^)]+)\)", table[0]).group(1)
    assert (demo_run.parent / re.sub("%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), link)).exists()


def test_unknown_true_labels_stop_the_run_before_it_starts(tmp_path):
    images = tmp_path / "images" / "dgo"
    images.mkdir(parents=True)
    shutil.copy(SAMPLES / "shapes" / "00_ellipse.png", images)
    result = CliRunner().invoke(main, ["run", str(SAMPLES / "demo_model.keras"), str(tmp_path / "images"), "-o",
                                       str(tmp_path / "out"), "--labels", str(SAMPLES / "labels.txt"),
                                       "--true-labels", "folder"])
    assert result.exit_code == 2 and "true label 'dgo'" in result.output
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_a_confusion_matrix_cell_shows_exactly_its_images(opened):
    page, _ = opened
    everything = _cards(page)
    cells = page.eval_on_selector_all("#matrix button", "bs => bs.map(b => [b.dataset.truth, b.dataset.predicted, "
                                      "Number(b.textContent)])")
    assert sum(count for _, _, count in cells) == 13
    for truth, predicted, count in cells:
        page.click(f"#matrix button[data-truth='{truth}'][data-predicted='{predicted}']")
        shown = {card["input"] for card in _cards(page)}
        expected = {c["input"] for c in everything if c["truth"] == truth and c["label"] == predicted and c["prob"]}
        assert shown == expected and len(shown) == count, (truth, predicted)
    page.click("#clear-cell")
    assert len(_cards(page)) == 14


def test_ten_thousand_images_are_drawn_a_chunk_at_a_time(browser, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"options": {"out_dir": str(out), "save": ["overlay"],
                                                          "methods": ["gradcam"]}, "counts": {"images": 10_000}}))
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as stream:
        table = csv.writer(stream)
        table.writerow(["input", "status", "pred_label", "pred_prob", "method", "output"])
        for number in range(10_000):
            table.writerow([f"in/{number:05d}.png", "ok", "cat" if number % 3 else "dog", number / 10_000, "gradcam",
                            str(out / f"{number:05d}.png.gradcam.png")])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(write_report(out).as_uri())
    page.wait_for_load_state("load")
    assert len(page.query_selector_all("#gallery .card")) == 120
    assert page.inner_text("#shown") == "showing 120 of 10000 images"
    page.evaluate("document.getElementById('sentinel').scrollIntoView()")
    _wait_until(page, "document.querySelectorAll('#gallery .card').length >= 240")
    page.evaluate("window.scrollTo(0, 0)")  # else the sentinel may still be in view and draw the next chunk
    page.select_option("#filter-class", "dog")
    assert page.inner_text("#shown") == "showing 120 of 3334 images (10000 in all)"
    page.close()
