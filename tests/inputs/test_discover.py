"""Finding the images of a run (_inputs/discover.py): order, folders and files, the output folder left out."""

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from xaicli._errors import UsageError
from xaicli._inputs.discover import discover


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_discover_is_recursive_sorted_and_case_insensitive(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    for name in ["b.PNG", "a.jpeg", "sub/z.Tif", "sub/deeper/c.bmp", "d.gif", "e.webp"]:
        _save(tmp_path / name, pixel)
    (tmp_path / "readme.md").write_text("x")
    items = discover([tmp_path])
    assert [str(i.relative) for i in items] == [
        "a.jpeg", "b.PNG", "d.gif", "e.webp", "sub/deeper/c.bmp", "sub/z.Tif"]
    assert all(i.path.exists() for i in items)


def test_discover_mixes_files_and_folders_without_collisions(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "one" / "x.png", pixel)
    _save(tmp_path / "two" / "x.png", pixel)
    single = _save(tmp_path / "three" / "y.png", pixel)
    items = discover([tmp_path / "one", tmp_path / "two", single, tmp_path / "one"])
    assert [str(i.relative) for i in items] == ["one/x.png", "three/y.png", "two/x.png"]


def test_discover_skips_the_output_folder_inside_the_inputs(tmp_path):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "a.png", pixel)
    _save(tmp_path / "out" / "a.png.gradcam.png", pixel)
    assert [str(i.relative) for i in discover([tmp_path], exclude=[tmp_path / "out"])] == ["a.png"]


def test_discover_single_file_keeps_its_name(tmp_path):
    path = _save(tmp_path / "pics" / "cat.jpg", np.zeros((2, 2, 3), np.uint8))
    assert next(discover([path])).relative == PurePosixPath("cat.jpg")


def test_discover_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="input not found"):
        discover([tmp_path / "nope"])


def test_relative_paths_never_climb_out_of_the_output_tree(tmp_path, monkeypatch):
    pixel = np.zeros((2, 2, 3), np.uint8)
    _save(tmp_path / "a" / "x.png", pixel)
    _save(tmp_path / "b" / "y.png", pixel)
    monkeypatch.chdir(tmp_path / "a")
    items = discover([Path("../a/../b"), Path("x.png")])
    assert [str(i.relative) for i in items] == ["a/x.png", "b/y.png"]
    assert all(".." not in i.relative.parts for i in items)
