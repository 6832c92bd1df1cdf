"""``OUT/index.html``: a run as one self-contained page for people and CI artifacts.

The page carries its CSS, JavaScript and data inline and shows images by relative path, so the
output folder works downloaded, opened from disk or served by an artifact browser; a Content
Security Policy forbids any request beyond the folder. Everything from file names, labels and
notes travels as JSON and reaches the page as text, never as markup (numpy-free; Pillow only to
make thumbnails that are missing).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

from PIL import Image

from .._errors import UsageError
from .._storage import is_url
from .._evaluation.faithfulness import figure_from_cell
from .._evaluation.truth import split_labels
from .naming import IMAGE_FORMATS, MANIFEST_NAME, kind_name, stem_of, table_path, thumbnail_name
from .table import FIGURE_COLUMNS, read_table, unit_values

REPORT_NAME = "index.html"
THUMBNAIL_LONG_SIDE = 256
THUMBNAIL_QUALITY = 85
_ASSETS = Path(__file__).with_name("report_assets")


def thumbnail_size(size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a thumbnail for an image of ``size`` (height, width): the long side at
    most ``THUMBNAIL_LONG_SIDE``, never enlarged."""
    height, width = size
    scale = min(1.0, THUMBNAIL_LONG_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass
class Card:
    """One input image on the page: its rows' facts and its maps."""

    input: str
    status: str = "ok"
    note: str = ""
    errors: list[str] = field(default_factory=list)
    pred_label: str = ""
    pred_prob: float | None = None
    true_label: str = ""  # with --true-labels
    correct: bool | None = None
    maps: list[dict[str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # what it is filtered by: the predicted class, or the labels present
    chips: list[str] = field(default_factory=list)  # a multi-label model's present labels, or a regression's values


def write_report(out_dir: Path) -> Path:
    """Write ``OUT/index.html`` from the run's ``run.json`` and predictions table, making any
    thumbnail that is missing (a run with ``--no-report``, or an older one) from the overlay or
    panel file. Returns the page's path; a one-line UsageError when OUT holds no run."""
    manifest, table, cards = _run(out_dir)
    data = {"run": _run_facts(manifest, table), "cards": [card.__dict__ for card in cards]}
    page = out_dir / REPORT_NAME
    html = (_ASSETS / "page.html").read_text(encoding="utf-8")
    html = html.replace("/*STYLE*/", (_ASSETS / "page.css").read_text(encoding="utf-8"))
    html = html.replace("/*SCRIPT*/", (_ASSETS / "page.js").read_text(encoding="utf-8"))
    html = html.replace("/*DATA*/", _script_safe_json(data))
    temporary = page.with_name(f".{REPORT_NAME}.tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(page)
    return page


SUMMARY_IMAGES = 10


def write_summary(out_dir: Path, path: Path, out_url: str | None = None) -> Path:
    """Write a short Markdown summary of the run in OUT to ``path``: counts, accuracy, and the
    ``SUMMARY_IMAGES`` misclassified or least confident images (misclassified first), each linked
    to its overlay relative to ``path`` (or, for an output folder on a store whose files
    ``out_dir`` spooled, by its URL ``out_url/...``). For a CI job page (e.g. ``$GITHUB_STEP_SUMMARY``)."""
    manifest, _, cards = _run(out_dir)

    def _link(text: str, target: Path, summary: Path) -> str:
        if out_url is None:
            return _relative_link(text, target, summary)
        return f"[{_md(text)}]({out_url}/{_url(PurePosixPath(target.relative_to(out_dir).as_posix()))})"

    counts = manifest.get("counts", {})
    resolved = manifest.get("resolved", {})
    explained = counts.get("explained", 0) + counts.get("resumed", 0)
    lines = [f"### xai: {explained} of {counts.get('images', 0)} images explained, {counts.get('failed', 0)} failed"
             + (f", {counts['skipped']} skipped" if counts.get("skipped") else ""), ""]
    model = Path(str(manifest.get("model", {}).get("path", ""))).name
    lines.append(f"Model {_md(model)}, layer {_md(resolved.get('layer') or 'input gradients')}, "
                 f"methods {_md(', '.join(manifest.get('options', {}).get('methods', [])))}, "
                 f"{float(manifest.get('seconds', 0)):.1f} s; the whole run: {_link('index.html', out_dir / REPORT_NAME, path)}")
    accuracy = manifest.get("accuracy")
    if accuracy and accuracy.get("images"):
        lines += ["", _accuracy_line(accuracy)]
        lines += _label_scores(accuracy)
    for method, means in (manifest.get("metrics") or {}).items():
        figures = ", ".join(f"{name} {value:.3f}" for name, value in means.items() if value is not None)
        lines += ["", f"Figures of {_md(method)}: {figures}"]
    shown = _worth_a_look(cards)
    if shown:
        truth = any(card.true_label for card in cards)
        chip_headings = {"multilabel": "| image | labels present |", "regression": "| image | values |",
                         "segmentation": "| image | classes explained (region) |"}
        several = resolved.get("kind") in chip_headings
        heading = chip_headings.get(resolved.get("kind"), "| image | predicted | probability |")
        lines += ["", heading + (" true |" if truth else ""),
                  "| --- " * heading.count("|", 1) + "|" + (" --- |" if truth else "")]
        for card in shown:
            target = card.maps[0]["full"] if card.maps and card.maps[0]["full"] else ""
            name = _link(card.input, out_dir / _unquoted(target), path) if target else _md(card.input)
            row = (f"| {name} | {_md(', '.join(card.chips) or 'none')} |" if several
                   else f"| {name} | {_md(card.pred_label)} | {card.pred_prob:.3f} |")
            lines.append(row + (f" {_md(card.true_label)}{'' if card.correct is not False else ' ✗'} |" if truth else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if _is_shared(path) else "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    return path


def _accuracy_line(accuracy: dict) -> str:
    """'**Accuracy 90.0%** (9 of 10 labelled images)', with the macro F1 where there is one."""
    f1 = f"; macro F1 {accuracy['f1']:.3f}" if accuracy.get("f1") is not None else ""
    exact = " (every label right)" if "labels" in accuracy else ""
    return (f"**Accuracy {accuracy['accuracy']:.1%}**{exact} ({accuracy['correct']} of {accuracy['images']} "
            f"labelled images){f1}")


def _label_scores(accuracy: dict) -> list[str]:
    """A multi-label run's per-label precision, recall and F1 as a Markdown table."""
    labels = accuracy.get("labels") or {}
    if not labels:
        return []
    shown = lambda value: "–" if value is None else f"{value:.3f}"  # noqa: E731
    return ["", "| label | precision | recall | F1 | images |", "| --- | --- | --- | --- | --- |"] + [
        f"| {_md(label)} | {shown(s['precision'])} | {shown(s['recall'])} | {shown(s['f1'])} | {s['support']} |"
        for label, s in labels.items()]


def _is_shared(path: Path) -> bool:
    """A CI's step summary collects what every step appends; any other file is written anew."""
    return str(path) == os.environ.get("GITHUB_STEP_SUMMARY")


def _worth_a_look(cards: list[Card]) -> list[Card]:
    """Misclassified images first, then the least confident, ``SUMMARY_IMAGES`` at most; for a
    regression or a segmentation (no probability per image), the first images."""
    if all(card.pred_prob is None for card in cards):
        return [card for card in cards if card.chips][:SUMMARY_IMAGES]
    predicted = [card for card in cards if card.pred_prob is not None]
    ranked = sorted(predicted, key=lambda card: (card.correct is not False, card.pred_prob))
    return ranked[:SUMMARY_IMAGES]


def _md(text: str) -> str:
    """Text that Markdown shows as it is: HTML characters as entities, punctuation escaped."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join(f"\\{char}" if char in "\\`*_{}[]()#+-.!|~" else char for char in text)


def _relative_link(text: str, target: Path, summary: Path) -> str:
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(summary.parent))
    return f"[{_md(text)}]({_url(PurePosixPath(Path(relative).as_posix()))})"


def _unquoted(url: str) -> str:
    return "/".join(unquote(part) for part in url.split("/"))


def _run(out_dir: Path) -> tuple[dict, str, list[Card]]:
    """The run in OUT: its manifest, where its table is, and its cards."""
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        options = manifest["options"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{out_dir} holds no run to report on (no readable {MANIFEST_NAME}); "
                         "give the -o folder of an `xai run`") from None
    table, records = _table(out_dir, options)
    return manifest, table, _cards(records, options, out_dir, str(manifest.get("resolved", {}).get("kind", "")))


def _table(out_dir: Path, options: dict) -> tuple[str, list[dict[str, object]]]:
    """Where the run's table is (as the page should say it: '' for standard output) and its
    rows, read from the table or from the copy a run kept when it wrote the table to standard
    output (none when neither can be found)."""
    table_format = options.get("table_format", "csv")
    given = options.get("predictions")
    path = table_path(out_dir, table_format, given)
    run_out = str(options.get("out_dir", ""))
    shown = f"{run_out}/{path.name}" if is_url(run_out) and not given else str(path)  # on a store: its URL
    try:
        return ("" if given == "-" else shown), read_table(path, table_format)[1]
    except (OSError, UnicodeDecodeError):
        return "", []


def _cards(records: list[dict[str, object]], options: dict, out_dir: Path, kind: str = "") -> list[Card]:
    """One card per input, in table order, with one map per row that has an output file; the
    prediction as the model's ``kind`` has it (a class, labels present, values)."""
    cards: dict[str, Card] = {}
    run_out = str(options.get("out_dir", out_dir))
    kinds = list(options.get("save", ["overlay"]))
    image_format = options.get("image_format", "png")
    image_format = image_format if image_format in IMAGE_FORMATS else "png"
    for record in records:
        name = str(record.get("input", ""))
        card = cards.setdefault(name, Card(name, true_label=str(record.get("true_label") or "")))
        status = str(record.get("status", ""))
        if status == "error":
            card.status = "error"
            card.errors.append(f"{record.get('method', '')}: {record.get('error', '')}")
            continue
        if status == "skipped" and card.status == "ok" and not card.maps:
            card.status = "skipped"
        card.note = card.note or str(record.get("note") or "")
        if kind == "segmentation":
            _region(card, record, str(options.get("methods", [""])[0]))
        elif not card.labels and not card.chips:
            _predicted(card, record, kind)
        output = str(record.get("output") or "")
        if output:
            card.maps.append(_map(record, _inside(output, run_out, out_dir), kinds, image_format, out_dir))
    return list(cards.values())


def _predicted(card: Card, record: dict[str, object], kind: str) -> None:
    """The card's prediction from its image's first row: the predicted class and its
    probability; for a multi-label model the labels present, each with its probability; for a
    regression each value."""
    card.correct = _truth_value(record.get("correct"))
    if kind == "regression":
        card.chips = [f"{'value ' + name if name.isdigit() else name} {value:.5g}"
                      for name, value in unit_values(record, "value").items()]
        return
    if record.get("pred_prob") not in (None, ""):
        card.pred_label = str(record.get("pred_label") or f"class {record.get('pred_index')}")
        card.pred_prob = float(record["pred_prob"])
        card.labels = [card.pred_label]
    if kind == "multilabel":
        probabilities = unit_values(record, "prob")
        card.labels = list(split_labels(str(record.get("positive") or "")))
        card.chips = [f"{label} {probabilities[label]:.2f}" if label in probabilities else label for label in card.labels]


def _region(card: Card, record: dict[str, object], method: str) -> None:
    """A segmentation's explained class on the card (once, from the rows of ``method``): its
    name and its region's size."""
    if record.get("method") != method or record.get("class_index") in (None, ""):
        return
    label = str(record.get("class_label") or f"class {record.get('class_index')}")
    card.labels.append(label)
    card.chips.append(f"{label} {record.get('region_pixels')} px")


def _truth_value(cell: object) -> bool | None:
    """The table's ``correct`` cell (CSV text or JSON boolean) as a boolean, None when empty."""
    if cell in (None, ""):
        return None
    return cell is True or str(cell).lower() == "true"


def _inside(output: str, run_out: str, out_dir: Path) -> PurePosixPath:
    """The output file's path inside OUT, from the path the table gives (as the run named it)."""
    if posixpath.isabs(output):
        return PurePosixPath(posixpath.relpath(output, str(out_dir.resolve())))
    return PurePosixPath(posixpath.relpath(output, run_out))


def _map(record: dict[str, object], output: PurePosixPath, kinds: list[str], image_format: str,
         out_dir: Path) -> dict[str, str]:
    """A map's method, explained class, thumbnail and full-size links (relative URLs)."""
    stem = stem_of(output, kinds[0], image_format)
    files = {kind: kind_name(stem, kind, image_format) for kind in kinds if kind != "raw"}
    thumbnail = thumbnail_name(stem)
    source = files.get("overlay") or files.get("ortho") or files.get("panel") or files.get("heatmap")
    if source is not None and not (out_dir / thumbnail).exists():
        _make_thumbnail(out_dir / source, out_dir / thumbnail)
    return {
        "figures": {name: value for name, column in FIGURE_COLUMNS.items()
                    if (value := figure_from_cell(record.get(column))) is not None},
        "method": str(record.get("method", "")),
        "class_label": str(record.get("class_label") or f"class {record.get('class_index')}"),
        "thumb": _url(thumbnail) if (out_dir / thumbnail).exists() else "",
        "full": _url(source) if source is not None else "",
        "panel": _url(files["panel"]) if "panel" in files else "",
        "links": [{"text": text, "href": _url(files[kind])} for kind, text in VOLUME_LINKS.items() if kind in files],
    }


VOLUME_LINKS = {"mosaic": "axial slices", "scan": "map (.nii.gz)"}  # a 3-D model's files linked under its map


def _make_thumbnail(source: Path, thumbnail: Path) -> None:
    """A thumbnail from an image file of the run; nothing when that file is not there."""
    try:
        with Image.open(source) as image:
            image.draft("RGB", (THUMBNAIL_LONG_SIDE, THUMBNAIL_LONG_SIDE))  # JPEG decodes at a fraction
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_LONG_SIDE, THUMBNAIL_LONG_SIDE), Image.Resampling.BILINEAR)
            thumbnail.parent.mkdir(parents=True, exist_ok=True)
            image.save(thumbnail, "JPEG", quality=THUMBNAIL_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError):
        return


def _url(path: PurePosixPath) -> str:
    """A relative URL: each part percent-encoded ('#', '?', '%' and spaces in names stay names)."""
    return "/".join(quote(part, safe="") for part in path.parts)


def _run_facts(manifest: dict, table: str) -> dict[str, object]:
    """What the page's header says of the run."""
    resolved, options = manifest.get("resolved", {}), manifest.get("options", {})
    model = manifest.get("model", {})
    return {
        "model": model.get("path", ""), "format": model.get("format", ""), "sha256": model.get("sha256", ""),
        "layer": resolved.get("layer") or "", "layer_reason": resolved.get("layer_reason", ""),
        "preprocess": resolved.get("preprocess", ""), "preprocess_reason": resolved.get("preprocess_reason", ""),
        "methods": options.get("methods", []), "counts": manifest.get("counts", {}),
        "status": manifest.get("status", ""), "seconds": manifest.get("seconds", 0),
        "kind": resolved.get("kind", "classifier"),
        "accuracy": manifest.get("accuracy"),
        "metrics": manifest.get("metrics"),
        "versions": f"xaicli {manifest.get('tool', {}).get('version', '')}, TensorFlow {manifest.get('tensorflow', '')}, "
                    f"Keras {manifest.get('keras', '')}",
        "table": table,
    }


def _script_safe_json(data: dict) -> str:
    """JSON that cannot end its <script> element or open a comment: '<', '>' and '&' escaped."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

