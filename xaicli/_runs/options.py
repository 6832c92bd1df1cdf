"""Options given in Python (``xaicli.Explainer``, ``xaicli.run``) turned into the configuration's
field values, as the command line's parsers turn its text: "gradcam,saliency" or a list, "224x224"
or a pair, a labels file or the names themselves."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

from .._errors import UsageError
from .config import ExplainOptions, parse_names, parse_numbers, parse_size

NAME_LISTS = ("methods", "save", "metrics")  # comma-separated on the command line
NUMBER_LISTS = ("mean", "std")
PATHS = ("model", "labels", "truth_masks", "truth_boxes", "summary")
# The command line's flags for outputs already in OUT, and what ``existing`` each means.
EXISTING_FLAGS = {"overwrite": "overwrite", "skip_existing": "skip", "resume": "resume"}


def as_fields(options: dict[str, Any], kind: type[ExplainOptions] = ExplainOptions) -> dict[str, Any]:
    """``options`` as keyword arguments of ``kind``: every value in the field's own type, and a
    one-line error for a name ``kind`` does not have."""
    known = {field.name for field in fields(kind)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; options are {', '.join(sorted(known))}")
    return {name: _field_value(name, value) for name, value in options.items()}


def existing_mode(flags: dict[str, Any]) -> str:
    """``existing`` from the command line's flags (``overwrite``, ``skip_existing``, ``resume``),
    popped from ``flags``; 'refuse' when none is set."""
    chosen = [mode for flag, mode in EXISTING_FLAGS.items() if flags.pop(flag, False)]
    if len(chosen) > 1:
        raise UsageError("--overwrite, --skip-existing and --resume contradict each other; give one")
    return chosen[0] if chosen else "refuse"


def _field_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in NAME_LISTS:
        return parse_names(value) if isinstance(value, str) else _names(value)
    if name in NUMBER_LISTS:
        return parse_numbers(value) if isinstance(value, str) else tuple(float(v) for v in value)
    if name == "input_size":
        return parse_size(value) if isinstance(value, str) else tuple(int(v) for v in value)
    if name in ("target_class", "custom_objects", "true_labels", "predictions"):
        return str(value)
    if name == "labels" and not isinstance(value, (str, os.PathLike)):
        return tuple(str(label) for label in value)
    if name in PATHS:
        return Path(value)
    return value


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(value).strip().lower() for value in values if str(value).strip())
