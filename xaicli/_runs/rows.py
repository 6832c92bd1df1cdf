"""What an explained image says in the table and under its panel: the rows (prediction, explained
class, top classes), the caption, and which classes each image is explained for. Shared by the
engines and the Python API, so a row is the same wherever it is made."""

from __future__ import annotations

import numpy as np

from .._explain.explainer import BatchExplanation
from .._explain.registry import REGISTRY
from .._outputs.table import Ranked, Row
from .decisions import Prepared


def explained_row(prepared: Prepared, explanation: BatchExplanation, index: int, method: str, *, name: str,
                  note: str = "", output: str = "", rank: int | None = None, top_k: int = 0,
                  figures: dict[str, float | bool] | None = None, true: dict[str, object] | None = None) -> Row:
    """The ``ok`` row of image ``index`` of a batch's ``explanation`` by ``method``: its prediction,
    the explained class and its score, and its ``top_k`` best classes."""
    probabilities = explanation.probabilities[index]
    predicted = predicted_class(explanation, index)
    explained = int(explanation.classes[index])
    return Row(
        input=name,
        status="ok",
        error="",
        note=note,
        pred_index=predicted,
        pred_label=class_label(prepared, predicted),
        pred_prob=float(probabilities[predicted]),
        class_index=explained,
        class_label=class_label(prepared, explained),
        class_prob=float(probabilities[explained]),
        class_score=float(explanation.scores[index, explained]),
        method=method,
        layer=layer_label(prepared, method),
        output=output,
        rank=rank,
        top=top_classes(prepared, explanation, index, top_k),
        **(true or {}),
        figures=figures or {},
    )


def error_row(prepared: Prepared, name: str, method: str, error: str, true: dict[str, object] | None = None) -> Row:
    """The ``error`` row of an image that could not be explained, or whose files could not be written."""
    return Row(
        input=name, status="error", error=error, note="",
        pred_index=None, pred_label="", pred_prob=None,
        class_index=None, class_label="", class_prob=None, class_score=None,
        method=method, layer=layer_label(prepared, method), output="", **(true or {}),
    )


def caption(prepared: Prepared, explanation: BatchExplanation, index: int) -> str:
    """'label 0.93' for the predicted class, and the explained class when it differs."""
    probabilities = explanation.probabilities[index]
    predicted, explained = predicted_class(explanation, index), int(explanation.classes[index])
    name = lambda i: class_label(prepared, i) or f"class {i}"  # noqa: E731
    text = f"{name(predicted)} {probabilities[predicted]:.2f}"
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


def layer_label(prepared: Prepared, method: str) -> str:
    """What the table's layer column says: the target layer, the attention layers rolled out
    ('first..last'), or 'input' for gradient methods."""
    family = REGISTRY[method].family
    if family == "attention":
        attention = prepared.info.attention_layers
        return attention[0] if len(attention) == 1 else f"{attention[0]}..{attention[-1]}"
    return prepared.layer.path if REGISTRY[method].needs_layer else "input"
