"""What a model's output is (plain data, no TensorFlow): a classifier, a binary or multi-label
sigmoid head, a regression, or a per-pixel segmentation, told from its shape and final
activation, or as the user says with ``--kind``."""

from __future__ import annotations

from .._errors import UsageError

AUTO_KIND = "auto"
KINDS = {
    "classifier": "one class per image: a softmax, or the logits of several linear units",
    "binary": "one sigmoid unit: class 1 (positive) above 0.5, class 0 below",
    "multilabel": "several sigmoid units: each label is present or not (--target positive explains each present one)",
    "regression": "linear units that predict values (bone age, a severity score); the maps explain the value",
    "segmentation": "a class per pixel: (N, H, W, C) softmax or logits, or (N, H, W, 1) sigmoid",
}
IMAGE_LEVEL = ("classifier", "binary", "multilabel", "regression")  # kinds of an (N, units) output


def detected_kind(shape: tuple[int | None, ...], activation: str) -> tuple[str, str] | None:
    """The kind of an output shaped ``shape`` (batch first) ending in ``activation`` ('softmax',
    'sigmoid' or 'linear'), and why; None for an output that is neither (N, units) nor
    (N, H, W, C), such as a token sequence."""
    if len(shape) == 4 and shape[-1] is not None:
        return "segmentation", f"a per-pixel {activation} output of {shape[-1]} channel{'s' if shape[-1] != 1 else ''}"
    if len(shape) != 2 or shape[1] is None:
        return None
    units = int(shape[1])
    if activation == "softmax":
        return "classifier", f"a softmax over {units} classes"
    if activation == "sigmoid":
        return ("binary", "one sigmoid unit") if units == 1 else ("multilabel", f"{units} sigmoid units")
    if units == 1:
        return "regression", "one linear unit"
    return "classifier", (f"{units} linear units, taken as a classifier's logits "
                          "(--kind multilabel or regression if they are not)")


def resolved_kind(requested: str, shape: tuple[int | None, ...], activation: str) -> tuple[str, str]:
    """``--kind`` (``auto`` or one of ``KINDS``) for an output: the kind and why, or a one-line
    UsageError when the output cannot be that kind."""
    detected = detected_kind(shape, activation)
    if requested == AUTO_KIND:
        if detected is None:
            raise UsageError(f"the output shaped {_dims(shape)} is neither (N, units) nor (N, H, W, C)")
        return detected
    if requested not in KINDS:
        raise UsageError(f"unknown --kind {requested!r}; choose from auto, {', '.join(KINDS)}")
    problem = _mismatch(requested, shape, activation)
    if problem:
        raise UsageError(f"--kind {requested}: the explained output is {_dims(shape)} with a {activation} activation; "
                         f"{problem}")
    return requested, "as requested (--kind)"


def _mismatch(kind: str, shape: tuple[int | None, ...], activation: str) -> str:
    """Why an output cannot be ``kind`` ('' when it can)."""
    if kind == "segmentation":
        return "" if len(shape) == 4 and shape[-1] is not None else "a segmentation output is (N, H, W, C)"
    if len(shape) != 2 or shape[1] is None:
        return f"a {kind} output is (N, units)"
    units = int(shape[1])
    if kind == "classifier" and (units < 2 or activation == "sigmoid"):
        return "a classifier has a softmax or the linear logits of two or more classes"
    if kind in ("binary", "multilabel") and activation == "softmax":
        return "a softmax makes its units compete: that is a classifier"
    if kind == "binary" and units != 1:
        return "a binary output is one unit (a sigmoid, or its logit)"
    if kind == "regression" and activation == "softmax":
        return "a softmax's units sum to 1: that is a classifier"
    return ""


def _dims(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(shape)) + ")"
