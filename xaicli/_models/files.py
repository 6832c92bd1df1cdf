"""What can be told of a model path without TensorFlow: that it is there and is of a kind the
loader reads. Checked before TensorFlow is imported (about 4 s), so a mistyped path is answered
at once."""

from __future__ import annotations

from pathlib import Path

from .._errors import ModelError

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
WHAT_WORKS = "give a .keras or .h5 file, or a SavedModel folder (with saved_model.pb)"
SERVED_LAYER_TYPE = "_ServedModel"  # load.py's class for a SavedModel kept as its serving function only


def check_model_path(path: Path) -> None:
    """Raise ``ModelError`` (one line saying what to give) unless ``path`` is an existing
    ``.keras``/``.h5`` file or a folder holding ``saved_model.pb``."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path} is a folder but not a SavedModel (no saved_model.pb); {WHAT_WORKS}")
    elif path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: unsupported model format ({path.suffix or 'no suffix'}); {WHAT_WORKS}")
