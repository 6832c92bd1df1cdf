"""What is true of the images: their classes (``--true-labels``, from each image's parent folder,
the ImageFolder layout, or a CSV of path,label) with the accuracy and confusion matrix they give,
and where their objects are (``--truth-masks``, ``--truth-boxes``) (numpy and Pillow only)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .._errors import ImageError, UsageError, first_line
from .._inputs.discover import InputImage
from .faithfulness import box_mask

FOLDER = "folder"


LABEL_SEPARATOR = ";"  # between the labels of one image of a multi-label model: 'Effusion;Edema'


@dataclass(frozen=True)
class Truth:
    """Where true labels come from: the parent folder's name, or a CSV's rows by path. With
    ``several`` (a multi-label model), a label cell may list several labels, ';'-separated."""

    from_folder: bool = False
    by_path: dict[str, str] = field(default_factory=dict)
    several: bool = False

    def label(self, item: InputImage) -> str:
        """The image's true label (labels, ';'-joined in the order given); '' when the CSV does not name it."""
        if self.from_folder:
            return item.path.parent.name
        return self.by_path.get(_key(item.path)) or self.by_path.get(str(item.relative), "")

    def labels(self, item: InputImage) -> tuple[str, ...]:
        """The image's true labels: one, or for a multi-label model each listed one."""
        return split_labels(self.label(item)) if self.several else tuple(filter(None, [self.label(item)]))


def split_labels(text: str) -> tuple[str, ...]:
    """'Effusion; Edema' -> ('Effusion', 'Edema'); '' -> ()."""
    return tuple(part.strip() for part in text.split(LABEL_SEPARATOR) if part.strip())


def load_truth(spec: str, several: bool = False) -> Truth:
    """``folder``, or a CSV file of ``path,label`` rows (a header row is allowed; paths relative
    to the current folder, to the CSV's own folder, or to the input folder); one-line errors.
    ``several``: a label cell may list several labels, ';'-separated (a multi-label model)."""
    if spec == FOLDER:
        return Truth(from_folder=True, several=several)
    path = Path(spec)
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = [row for row in csv.reader(stream) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--true-labels {spec}: cannot read it ({exc}); give 'folder' or a CSV of path,label") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    bad = next((number for number, row in enumerate(rows, 1) if len(row) < 2 or not row[1].strip()), None)
    if bad is not None:
        raise UsageError(f"--true-labels {spec}: row {bad} is not 'path,label'")
    by_path: dict[str, str] = {}
    for image, label in ((row[0].strip(), row[1].strip()) for row in rows):
        by_path[image.replace(os.sep, "/")] = label  # as the input folder's relative path
        by_path[_key(Path(image))] = label
        by_path.setdefault(_key(path.parent / image), label)
    return Truth(by_path=by_path, several=several)


def _key(path: Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def check_known(truth: Truth, items: Iterable[InputImage], class_names: tuple[str, ...], classes: int) -> None:
    """Every true label must be one of the model's classes: a name from ``--labels``, or a class
    index when there is no labels file. A one-line UsageError names the first that is not."""
    known = set(class_names) if class_names else {str(index) for index in range(classes)}
    for item in items:
        label = next((label for label in truth.labels(item) if label not in known), "")
        if label:
            where = f"the folder of {item.path}" if truth.from_folder else f"the row of {item.path}"
            shown = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
            hint = "" if class_names else " (without --labels, true labels are class indices)"
            raise UsageError(f"true label {label!r} ({where}) is not one of the model's classes: {shown}{hint}; "
                             "fix it, or give the model's --labels")


def predicted_name(pred_label: str, pred_index: object) -> str:
    """What a true label is compared with: the predicted class's label, or its index."""
    return pred_label or ("" if pred_index in (None, "") else str(pred_index))


@dataclass
class Tally:
    """Accuracy and the confusion matrix over the images that have a true label and a prediction."""

    pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # (true, predicted) -> images

    def add(self, true_label: str, predicted: str | None) -> None:
        if true_label and predicted:
            self.pairs[(true_label, predicted)] = self.pairs.get((true_label, predicted), 0) + 1

    @property
    def labelled(self) -> int:
        return sum(self.pairs.values())

    @property
    def correct(self) -> int:
        return sum(count for (true, predicted), count in self.pairs.items() if true == predicted)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: images counted, correct, accuracy, macro F1 over the true classes, and the
        matrix (rows true, columns predicted, over the classes seen on either side in sorted order)."""
        classes = sorted({name for pair in self.pairs for name in pair})
        counts = LabelCounts()
        for (true, predicted), images in self.pairs.items():
            counts.add({true}, {predicted}, images)
        return {
            "images": self.labelled, "correct": self.correct,
            "accuracy": _ratio(self.correct, self.labelled),
            "f1": counts.macro_f1(sorted({true for true, _ in self.pairs})),
            "classes": classes,
            "confusion": [[self.pairs.get((true, predicted), 0) for predicted in classes] for true in classes],
        }


@dataclass
class LabelCounts:
    """True positives, false positives and false negatives per label."""

    counts: dict[str, list[int]] = field(default_factory=dict)  # label -> [tp, fp, fn]

    def add(self, true: set[str], predicted: set[str], images: int = 1) -> None:
        for label in true | predicted:
            entry = self.counts.setdefault(label, [0, 0, 0])
            entry[0 if label in true and label in predicted else 1 if label in predicted else 2] += images

    def scores(self, label: str) -> dict[str, float | int | None]:
        """precision, recall, F1 (None when undefined: nothing predicted, or nothing true) and support."""
        tp, fp, fn = self.counts.get(label, [0, 0, 0])
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}

    def macro_f1(self, labels: Iterable[str]) -> float | None:
        """The mean F1 of ``labels`` (those with an F1)."""
        values = [f1 for f1 in (self.scores(label)["f1"] for label in labels) if f1 is not None]
        return round(sum(values) / len(values), 6) if values else None


@dataclass
class LabelTally:
    """A multi-label model's images with true labels and a prediction: per-label precision,
    recall and F1, their macro means, and the exact-match accuracy (every label right)."""

    labels: tuple[str, ...]  # the model's labels (names, or indices), in order
    images: int = 0
    exact: int = 0
    counts: LabelCounts = field(default_factory=LabelCounts)

    def add(self, true_labels: str, predicted: str | None) -> None:
        """``true_labels`` and the ``predicted`` positive labels ';'-joined; None: no prediction."""
        true = set(split_labels(true_labels))
        if not true or predicted is None:
            return
        positive = set(split_labels(predicted))
        self.images += 1
        self.exact += true == positive
        self.counts.add(true, positive)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: images counted, exact matches, accuracy (their share), macro precision,
        recall and F1 over the labels that occur (true or predicted), and each label's scores."""
        seen = [label for label in self.labels if label in self.counts.counts]
        per_label = {label: self.counts.scores(label) for label in seen}

        def macro(name: str) -> float | None:
            values = [scores[name] for scores in per_label.values() if scores[name] is not None]
            return round(sum(values) / len(values), 6) if values else None

        return {"images": self.images, "correct": self.exact, "accuracy": _ratio(self.exact, self.images),
                "precision": macro("precision"), "recall": macro("recall"), "f1": macro("f1"),
                "labels": per_label}


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


class MaskError(ImageError):
    """An image's object mask cannot be read."""


@dataclass(frozen=True)
class GroundTruth:
    """Where each image's object is: a mask file mirroring the inputs, or boxes by relative path."""

    masks: Path | None = None
    boxes: dict[str, list[list[float]]] = field(default_factory=dict)

    def mask(self, item: InputImage, original: tuple[int, int], size: tuple[int, int],
             label: int | None = None) -> np.ndarray | None:
        """(H, W) = ``size`` boolean object mask of an image of ``original`` (height, width)
        pixels: a mask's non-zero pixels, or those equal to ``label`` (a segmentation's class in
        a label map); None when the image has no ground truth (or is a slice of a volume)."""
        if item.part is not None:
            return None
        if self.masks is None:
            boxes = self.boxes.get(str(item.relative))
            scale = (size[0] / original[0], size[1] / original[1])
            return box_mask(boxes, size, scale) if boxes is not None else None
        found = self._mask_file(item)
        if found is None:
            return None
        if label is not None:
            labels = Image.fromarray(self.label_map(item).astype(np.int32)).resize((size[1], size[0]),
                                                                                  Image.Resampling.NEAREST)
            return np.asarray(labels) == label
        try:
            with Image.open(found) as picture:
                gray = picture.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
        except (OSError, ValueError):
            raise MaskError(f"cannot read the mask {found}; give a PNG whose non-zero pixels are the object") from None
        return np.asarray(gray) > 0

    def label_map(self, item: InputImage) -> np.ndarray:
        """(h, w) int64 class of each pixel of the image's mask, as stored (a segmentation's
        ``--region truth``: 8- or 16-bit grayscale PNGs whose values are class indices).

        Raises:
            MaskError: no mask for the image, or one that cannot be read.
        """
        found = self._mask_file(item) if self.masks is not None and item.part is None else None
        if found is None:
            raise MaskError(f"no mask for this image under --truth-masks {self.masks}; --region truth needs one "
                            "(a PNG of the same relative path whose pixels are class indices)")
        try:
            with Image.open(found) as picture:
                if picture.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                    raise ValueError(picture.mode)
                return np.asarray(picture).astype(np.int64)
        except (OSError, ValueError):
            raise MaskError(f"cannot read the mask {found} as class indices; give a grayscale PNG whose pixel "
                            "values are the classes (0 background)") from None

    def _mask_file(self, item: InputImage) -> Path | None:
        """The mask of ``item`` under ``masks``: the same relative path, or with '.png' for or after its suffix."""
        exact = self.masks / item.relative
        return next((candidate for candidate in (exact, exact.with_suffix(".png"), exact.with_name(f"{exact.name}.png"))
                     if candidate.is_file()), None)


def load_ground_truth(masks: Path | None, boxes: Path | None) -> GroundTruth | None:
    """``--truth-masks`` or ``--truth-boxes`` (read and checked now: one-line errors)."""
    if masks is not None:
        return GroundTruth(masks=masks)
    if boxes is None:
        return None
    try:
        data = json.loads(boxes.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--truth-boxes {boxes}: not readable JSON ({first_line(exc)})") from None
    valid = isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(b, list) and len(b) == 4 and all(isinstance(n, (int, float)) for n in b)
                                    for b in v) for v in data.values())
    if not valid:
        raise UsageError(f"--truth-boxes {boxes}: expected {{\"relative/path.png\": [[x0, y0, x1, y1], ...]}}")
    return GroundTruth(boxes={str(key).replace(os.sep, "/"): value for key, value in data.items()})
