"""config.py: validation and small parsers, without TensorFlow."""

import json
from pathlib import Path

import pytest

from xaicli.config import RunConfig, load_labels, parse_names, parse_size, resolve_class
from xaicli.errors import UsageError


def _config(**overrides):
    values = dict(model=Path("m.keras"), inputs=(Path("imgs"),), out_dir=Path("out"))
    return RunConfig(**{**values, **overrides})


@pytest.mark.parametrize("overrides,message", [
    ({"methods": ("nope",)}, "unknown method 'nope'"),
    ({"methods": ("gradcam", "gradcam")}, "twice"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"alpha": 1.5}, "--alpha must be between 0 and 1"),
    ({"preprocess": "magic"}, "unknown preprocessing"),
    ({"inputs": ()}, "no inputs"),
])
def test_bad_values_name_the_option(overrides, message):
    with pytest.raises(UsageError, match=message):
        _config(**overrides)


def test_parsers():
    assert parse_names(" GradCAM, ,gradcam++") == ("gradcam", "gradcam++")
    assert parse_size("224x160") == (224, 160)
    with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
        parse_size("224")


@pytest.mark.parametrize("name,content", [
    ("labels.txt", "cat\n\ndog\nbird\n"),
    ("labels.json", json.dumps(["cat", "dog", "bird"])),
    ("labels.json", json.dumps({"0": "cat", "2": "bird", "1": "dog"})),
])
def test_labels_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert load_labels(path) == ("cat", "dog", "bird")


def test_resolve_class_by_index_or_name_and_range():
    labels = ("cat", "dog")
    assert resolve_class(None, labels, 2) is None
    assert resolve_class("1", labels, 2) == 1
    assert resolve_class("dog", labels, 2) == 1
    with pytest.raises(UsageError, match="out of range: the model has 2 classes"):
        resolve_class("5", labels, 2)
    with pytest.raises(UsageError, match="not a class index or a known label"):
        resolve_class("horse", labels, 2)
