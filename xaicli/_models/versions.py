"""Model files written by another Keras than the one installed: Keras 2's numbering of nested
model calls, and the options a newer Keras added. Such a file is read from a corrected temporary
copy of its config; the user's file is never changed.

Keras writes every constructor option into a file, also those left at their default, so a file
from Keras 3.15 names ``input_axes`` on every initializer and ``renorm`` on every
BatchNormalization, and Keras 3.12 (the newest that Python 3.10 gets) refuses the whole file.
An option that holds the default its Keras gave it asks for the behaviour older Keras has without
the option, so dropping it changes nothing; any other value cannot be honoured here and is one line.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import keras

from .._errors import ModelError

LOG = logging.getLogger("xaicli")
NESTED_MODEL_CLASSES = ("Functional", "Model", "Sequential")

# Options Keras added after 3.6 (the oldest Keras the package accepts) whose default is not None:
# class name -> option -> (default, as it reads back from JSON; the Keras that added it). Made by
# comparing the constructor signatures (every ``__init__`` up the class hierarchy) of the classes
# in keras.layers, initializers, regularizers, constraints, losses, metrics and optimizers from
# one release to the next, 3.6.0 to 3.15.1. Options whose default is None need no entry.
NEWER_DEFAULTS: dict[str, dict[str, tuple[Any, str]]] = {
    "BatchNormalization": {"renorm": (False, "3.14"), "renorm_momentum": (0.99, "3.14")},
    "MultiHeadAttention": {"use_gate": (False, "3.14")},
    "GroupedQueryAttention": {"use_gate": (False, "3.14")},
    "IntegerLookup": {"oov_method": ("floormod", "3.14")},
    "StringLookup": {"oov_method": ("floormod", "3.14")},
    "Resizing": {"antialias": (False, "3.9")},
    "RandomContrast": {"value_range": ([0, 255], "3.8")},
}
PYTHON_3_11_FROM = (3, 13)  # Keras releases from 3.13 on declare Requires-Python >= 3.11


def version_tuple(text: str) -> tuple[int, ...]:
    """'3.15.1' -> (3, 15, 1); suffixes such as '.dev0' count as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in text.split(".")[:3])


def written_by(path: Path) -> str:
    """The version of Keras that wrote a .keras or .h5 file ('' when the file does not say)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
        except (OSError, KeyError, ValueError):
            return ""
    attributes = h5_attributes(path)
    return attributes[0] if attributes else ""


def is_newer_than_this(version: str) -> bool:
    """Whether a file's Keras ``version`` is newer than the installed Keras."""
    return bool(version) and version_tuple(version) > version_tuple(keras.__version__)


def what_reads(version: str) -> str:
    """What installs a Keras that reads a file written by Keras ``version``."""
    needs = " (it needs Python 3.11 or newer)" if version_tuple(version)[:2] >= PYTHON_3_11_FROM else ""
    return f"install Keras {'.'.join(version.split('.')[:2])} or newer{needs}"


def model_config(path: Path) -> Any:
    """A .keras or .h5 file's model config as JSON data (None when it cannot be read)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        attributes = h5_attributes(path)
        return json.loads(attributes[1]) if attributes and attributes[1] else None
    except (OSError, KeyError, ValueError):
        return None


def h5_attributes(path: Path) -> tuple[str, str | None] | None:
    """(Keras version that wrote it, model config JSON) of an HDF5 model file; None when the
    file is not HDF5. h5py returns these attributes as bytes or str depending on the writer."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version, config = handle.attrs.get("keras_version", "unknown"), handle.attrs.get("model_config")
    except OSError:
        return None
    text = lambda value: value.decode() if isinstance(value, bytes) else value  # noqa: E731
    return str(text(version)), text(config)


def keras2_config(path: Path) -> dict | None:
    """The model config of an .h5 file written by Keras 2, or None for anything else."""
    attributes = h5_attributes(path) if path.suffix.lower() in (".h5", ".hdf5") else None
    if attributes is None or not attributes[0].startswith("2.") or attributes[1] is None:
        return None  # not HDF5 (Keras reports it), or not Keras 2
    return json.loads(attributes[1])


@contextlib.contextmanager
def readable_copy(path: Path) -> Iterator[Path]:
    """The .keras or .h5 file to load: ``path`` itself, or a temporary copy whose config this
    Keras reads: a Keras 2 file's nested calls renumbered (``renumber_nested_calls``), a newer
    Keras's options dropped where they hold their default (``drop_newer_defaults``).

    Raises:
        ModelError: a newer Keras's option holds a value this Keras cannot honour.
    """
    version = written_by(path)
    config = model_config(path) if version.startswith("2.") or is_newer_than_this(version) else None
    changed = config is not None and (renumber_nested_calls(config["config"]) if version.startswith("2.")
                                      else drop_newer_defaults(config, path, version))
    if not changed:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="xai-readable-") as scratch:
        copy = Path(scratch) / path.name
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
                for entry in source.infolist():
                    data = json.dumps(config).encode() if entry.filename == "config.json" else source.read(entry)
                    target.writestr(entry, data)
        else:
            import h5py

            shutil.copyfile(path, copy)
            with h5py.File(copy, "r+") as handle:
                handle.attrs["model_config"] = json.dumps(config)
        yield copy


def renumber_nested_calls(model_config: dict) -> bool:
    """Lower by one every node index that refers to a call of a nested model, recursively.

    Keras 2 gave every Functional or Sequential model a node of its own creation, so a model
    nested in another is called at node 1; Keras 3 rebuilds nested models without that node and
    fails to connect the graph ("disconnected nodes"). Returns whether anything changed."""
    layers = model_config.get("layers", [])
    nested = {layer["config"]["name"] for layer in layers if layer.get("class_name") in NESTED_MODEL_CLASSES}
    changed = False
    for layer in layers:
        if layer.get("class_name") in NESTED_MODEL_CLASSES:
            changed |= renumber_nested_calls(layer["config"])
        for node in layer.get("inbound_nodes", []):
            for reference in node:
                if reference[0] in nested and reference[1] > 0:
                    reference[1] -= 1
                    changed = True
    return changed


def drop_newer_defaults(config: Any, path: Path, version: str) -> bool:
    """Remove, in place and at every depth, the options of built-in Keras objects that the
    installed class does not accept and that hold their default: None, or the default
    ``NEWER_DEFAULTS`` records. Other unknown entries are left to Keras (a model's own config
    holds its layers, not options). Returns whether anything was removed; each removal is logged
    (``--debug`` shows it).

    Raises:
        ModelError: an option of ``NEWER_DEFAULTS`` holds another value: one line naming both
            Keras versions, the option and what reads the file.
    """
    dropped: Counter[str] = Counter()
    for node in serialized_objects(config):
        accepted = _accepted_options(node)
        options = node.get("config")
        if accepted is None or not isinstance(options, dict):
            continue
        newer = NEWER_DEFAULTS.get(node["class_name"], {})
        for key in [k for k in options if k not in accepted and (options[k] is None or k in newer)]:
            value = options[key]
            default, since = newer.get(key, (None, version))
            if value != default:
                raise ModelError(
                    f"cannot load model {path}: it was written by Keras {version}, whose {node['class_name']} "
                    f"option {key}={json.dumps(value)} this Keras {keras.__version__} does not have (it came with "
                    f"Keras {since}); {what_reads(since)}, or save the model with {key} at its default")
            del options[key]
            dropped[f"{node['class_name']}.{key}={json.dumps(value)}"] += 1
    for option, times in dropped.items():
        LOG.debug("%s: dropped %s from %d object(s) (Keras %s's default; this Keras %s has no such option)",
                  path, option, times, version, keras.__version__)
    return bool(dropped)


def serialized_objects(node: Any) -> Iterator[dict]:
    """Every serialized object (a dict with a ``class_name``) in a model config, at any depth."""
    if isinstance(node, list):
        for item in node:
            yield from serialized_objects(item)
    elif isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from serialized_objects(value)


def _accepted_options(node: dict) -> set[str] | None:
    """The constructor options of the installed class a serialized Keras object names (every
    ``__init__`` up its class hierarchy), or None when it is not a Keras class found here. The
    layers of an .h5 config name no module; those are built-in layers."""
    module, name = node.get("module", "keras.layers"), node.get("class_name")
    if not (isinstance(module, str) and module.startswith("keras") and isinstance(name, str)):
        return None
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    if not isinstance(cls, type):
        return None
    return {parameter for klass in cls.__mro__ if "__init__" in vars(klass)
            for parameter in inspect.signature(klass.__init__).parameters}
