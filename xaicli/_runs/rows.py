"""What an explained image says in the table and under its panel: the rows (prediction, explained
class, top classes, every label's probability or every value), the caption, and the table's
columns. Shared by the engines and the Python API, so a row is the same wherever it is made."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._evaluation.truth import predicted_name, split_labels
from .._explain.explainer import BatchExplanation
from .._explain.registry import REGISTRY
from .._outputs.table import Layout, Ranked, Row
from .config import DEFAULT_THRESHOLD, ExplainOptions
from .decisions import Prepared


def explained_row(prepared: Prepared, explanation: BatchExplanation, index: int, method: str, *, name: str,
                  note: str = "", output: str = "", rank: int | None = None, top_k: int = 0,
                  figures: dict[str, float | bool] | None = None, true_label: str | None = None,
                  region_pixels: int | None = None) -> Row:
    """The ``ok`` row of image ``index`` of a batch's ``explanation`` by ``method``: its prediction,
    the explained class and its score, its ``top_k`` best classes, and every label's probability
    (multi-label) or every value (regression); a segmentation's class over its region of
    ``region_pixels``. ``true_label``: with ``--true-labels``, the image's ('' when it has none)."""
    reported = explanation.probabilities[index]
    explained = int(explanation.classes[index])
    regression = prepared.info.kind == "regression"
    predicted = None if regression or prepared.info.kind == "segmentation" else predicted_class(explanation, index)
    return Row(
        input=name,
        status="ok",
        error="",
        note=note,
        pred_index=predicted,
        pred_label="" if predicted is None else class_label(prepared, predicted),
        pred_prob=None if predicted is None else float(reported[predicted]),
        class_index=explained,
        class_label=class_label(prepared, explained),
        class_prob=None if regression else float(reported[explained]),
        class_score=float(explanation.scores[index, explained]),
        method=method,
        layer=layer_label(prepared, method),
        output=output,
        rank=rank,
        top=top_classes(prepared, explanation, index, top_k),
        **_truth(prepared, true_label, _predicted_names(prepared, explanation, index)),
        figures=figures or {},
        units=tuple(float(value) for value in reported) if _per_unit(prepared) else (),
        positive=positive_labels(prepared, explanation, index),
        region_pixels=region_pixels,
    )


def nothing_row(prepared: Prepared, explanation: BatchExplanation, index: int, method: str, *, name: str,
                reason: str, note: str = "", true_label: str | None = None) -> Row:
    """The row of an image with nothing to explain (``reason``: no label present, no class in
    its mask): its prediction (every label's probability), no explained class and no map."""
    row = explained_row(prepared, explanation, index, method, name=name, true_label=true_label)
    return replace(row, class_index=None, class_label="", class_prob=None, class_score=None,
                   note=f"{note}; {reason}" if note else reason)


def error_row(prepared: Prepared, name: str, method: str, error: str, true_label: str | None = None) -> Row:
    """The ``error`` row of an image that could not be explained, or whose files could not be written."""
    return Row(
        input=name, status="error", error=error, note="",
        pred_index=None, pred_label="", pred_prob=None,
        class_index=None, class_label="", class_prob=None, class_score=None,
        method=method, layer=layer_label(prepared, method), output="", **_truth(prepared, true_label, None),
    )


def _truth(prepared: Prepared, true_label: str | None, predicted: tuple[str, ...] | None) -> dict[str, object]:
    """The row's true_label and correct: whether the prediction (the predicted class, or a
    multi-label model's positive labels) is the true label (set); None without a label or a
    prediction. Nothing without ``--true-labels``."""
    if true_label is None:
        return {}
    if not true_label or predicted is None:
        return {"true_label": true_label, "correct": None}
    if prepared.info.kind == "multilabel":
        return {"true_label": true_label, "correct": set(split_labels(true_label)) == set(predicted)}
    return {"true_label": true_label, "correct": predicted == (true_label,)}


def _predicted_names(prepared: Prepared, explanation: BatchExplanation, index: int) -> tuple[str, ...] | None:
    """What a true label is compared with: the positive labels of a multi-label model, the
    predicted class's name (or index) of a classifier; None for a regression."""
    if prepared.info.kind == "multilabel":
        return positive_labels(prepared, explanation, index)
    if prepared.info.kind in ("regression", "segmentation"):
        return None
    predicted = predicted_class(explanation, index)
    return (predicted_name(class_label(prepared, predicted), predicted),)


def positive_labels(prepared: Prepared, explanation: BatchExplanation, index: int) -> tuple[str, ...]:
    """A multi-label model's labels at or above the threshold for image ``index`` (names, or
    indices), in label order; () for other kinds."""
    if prepared.info.kind != "multilabel":
        return ()
    names = unit_names(prepared)
    return tuple(names[i] for i in np.flatnonzero(explanation.probabilities[index] >= threshold(prepared)))


def threshold(prepared: Prepared) -> float:
    """The probability at which a multi-label model's label (a sigmoid segmentation's class) is
    present (``--threshold``)."""
    given = prepared.config.threshold
    return DEFAULT_THRESHOLD if given is None else given


def caption(prepared: Prepared, explanation: BatchExplanation, index: int) -> str:
    """What is written under a panel: 'label 0.93' for a classifier's prediction (and the
    explained class when it differs), the explained label's probability for a multi-label
    model, the explained value for a regression."""
    reported = explanation.probabilities[index]
    explained = int(explanation.classes[index])
    name = lambda i: class_label(prepared, i) or f"class {i}"  # noqa: E731
    kind = prepared.info.kind
    if kind == "regression":
        unit = class_label(prepared, explained) or ("value" if prepared.info.units == 1 else f"value {explained}")
        lowers = " (explaining what lowers it)" if prepared.config.sign == "negative" else ""
        return f"{unit} {reported[explained]:.5g}{lowers}"
    if kind == "multilabel":
        return f"{name(explained)} {reported[explained]:.2f}"
    if kind == "segmentation":
        return f"{name(explained)} region, mean {reported[explained]:.2f}"
    predicted = predicted_class(explanation, index)
    text = f"{name(predicted)} {reported[predicted]:.2f}"
    return text if explained == predicted else f"{text}; explaining {name(explained)}"


def predicted_class(explanation: BatchExplanation, index: int) -> int:
    """The top class by score, as the explained top class is chosen: probabilities of nearly tied
    classes can round to the same float32 value where their scores still differ."""
    return int(np.argmax(explanation.scores[index]))


def top_classes(prepared: Prepared, explanation: BatchExplanation, index: int, top_k: int) -> tuple[Ranked, ...]:
    """The image's ``top_k`` classes, best first, ranked by score as ``--target topk`` ranks them."""
    order = np.argsort(-explanation.scores[index], kind="stable")[:top_k]
    probabilities = explanation.probabilities[index]
    return tuple(Ranked(int(c), class_label(prepared, int(c)), float(probabilities[c])) for c in order)


def class_label(prepared: Prepared, index: int) -> str:
    """The class's name from ``--labels``, '' without one."""
    return prepared.labels[index] if index < len(prepared.labels) else ""


def unit_names(prepared: Prepared) -> tuple[str, ...]:
    """Each unit's (label's, value's) name in the table: from ``--labels``, else its index."""
    return prepared.labels or tuple(str(index) for index in range(prepared.info.units))


def _per_unit(prepared: Prepared) -> str:
    """The table's per-unit columns: 'prob' for a multi-label model, 'value' for a regression."""
    return {"multilabel": "prob", "regression": "value"}.get(prepared.info.kind, "")


def table_layout(prepared: Prepared, options: ExplainOptions, table_format: str = "jsonl", truth: bool = False,
                 figures: tuple[str, ...] = ()) -> Layout:
    """The columns of the table of ``prepared``'s model explained as ``options`` say."""
    per_unit = _per_unit(prepared)
    return Layout(table_format=table_format, top_k=options.top_k, truth=truth, figures=figures,
                  ranked=options.target == "topk", per_unit=per_unit, units=unit_names(prepared) if per_unit else (),
                  regions=prepared.info.kind == "segmentation")


def layer_label(prepared: Prepared, method: str) -> str:
    """What the table's layer column says: the target layer, the attention layers rolled out
    ('first..last'), or 'input' for gradient methods."""
    family = REGISTRY[method].family
    if family == "attention":
        attention = prepared.info.attention_layers
        return attention[0] if len(attention) == 1 else f"{attention[0]}..{attention[-1]}"
    return prepared.layer.path if REGISTRY[method].needs_layer else "input"
