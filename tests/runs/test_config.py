"""config.py: validation and small parsers, without TensorFlow."""

import json
from pathlib import Path

import pytest

from xaicli._errors import UsageError
from xaicli._runs.config import RunConfig, load_labels, parse_names, parse_size, resolve_class


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
    ({"labels": Path("no/labels.txt")}, "--labels no/labels.txt: no such file"),
    ({"custom_objects": "no/layers.py"}, "--custom-objects no/layers.py: no such file"),
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
    findings = tuple(f"finding{i}" for i in range(14))
    with pytest.raises(UsageError, match="labels: finding0, .*, finding9, … and 4 more$"):
        resolve_class("Edema", findings, 14)


@pytest.mark.parametrize("parser", ["tomllib", "tomli"])
def test_config_files_load_under_either_toml_parser(tmp_path, monkeypatch, parser):
    """tomllib from Python 3.11, tomli before it: the loader and its errors work with both.
    A private copy of the module is loaded, so the one the other tests use stays as it is."""
    import importlib.util
    import sys

    import xaicli._runs.config

    pytest.importorskip(parser)
    if parser == "tomli":
        monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10: the import fails
    spec = importlib.util.spec_from_file_location("xaicli._runs._config_under_test", xaicli._runs.config.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # dataclasses look their module up there
    spec.loader.exec_module(copy)
    assert copy.tomllib.__name__ == parser
    good = tmp_path / "good.toml"
    good.write_text('batch-size = 8\nmethod = ["gradcam", "saliency"]\n')
    assert copy.read_config_file(good) == {"batch-size": 8, "method": ["gradcam", "saliency"]}
    bad = tmp_path / "bad.toml"
    bad.write_text("batch-size = = 8\n")
    with pytest.raises(UsageError, match="bad.toml is not valid TOML"):
        copy.read_config_file(bad)
