"""--true-labels without TensorFlow: labels from folders and CSV files, the check against the
model's classes, and the accuracy and confusion matrix, counted by hand."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from xaicli._errors import UsageError
from xaicli._evaluation.truth import Tally, check_known, load_truth, predicted_name
from xaicli._inputs.discover import InputImage


def _item(path: Path, relative: str) -> InputImage:
    return InputImage(path, PurePosixPath(relative))


def test_folder_labels_are_the_parent_folder_names(tmp_path):
    truth = load_truth("folder")
    assert truth.label(_item(tmp_path / "data" / "dog" / "a.png", "dog/a.png")) == "dog"


def test_csv_labels_match_paths_from_here_from_the_csv_and_inside_the_input_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "meta").mkdir()
    table = tmp_path / "meta" / "truth.csv"
    table.write_text("path,label\n../images/a.png,cat\nimages/b.png,dog\nsub/c.png,cat\n\n", encoding="utf-8")
    truth = load_truth(str(table))
    assert truth.label(_item(tmp_path / "images" / "a.png", "a.png")) == "cat"  # relative to the CSV
    assert truth.label(_item(Path("images/b.png"), "b.png")) == "dog"  # relative to the current folder
    assert truth.label(_item(tmp_path / "images" / "sub" / "c.png", "sub/c.png")) == "cat"  # inside the input
    assert truth.label(_item(tmp_path / "images" / "d.png", "d.png")) == ""


def test_bad_csv_files_are_one_line_errors(tmp_path):
    table = tmp_path / "truth.csv"
    table.write_text("a.png,cat\nb.png\n", encoding="utf-8")
    with pytest.raises(UsageError, match="row 2 is not 'path,label'"):
        load_truth(str(table))
    with pytest.raises(UsageError, match="cannot read it"):
        load_truth(str(tmp_path / "missing.csv"))


def test_labels_the_model_does_not_know_are_refused_before_the_run(tmp_path):
    items = [_item(tmp_path / "cat" / "a.png", "cat/a.png"), _item(tmp_path / "dgo" / "b.png", "dgo/b.png")]
    with pytest.raises(UsageError, match=r"true label 'dgo' \(the folder of .*b.png\) is not one of the model's "
                                         r"classes: cat, dog; fix it"):
        check_known(load_truth("folder"), items, ("cat", "dog"), 2)
    check_known(load_truth("folder"), items[:1], ("cat", "dog"), 2)
    with pytest.raises(UsageError, match="without --labels, true labels are class indices"):
        check_known(load_truth("folder"), items[:1], (), 2)


def test_accuracy_and_confusion_matrix_by_hand():
    tally = Tally()
    for true, predicted in [("cat", "cat"), ("cat", "dog"), ("dog", "dog"), ("dog", "dog"), ("", "cat"),
                            ("bird", "cat")]:
        tally.add(true, predicted)
    # F1 per true class, 2tp / (2tp + fp + fn): bird 0 / 1, cat 2 / (2 + 1 + 1), dog 4 / (4 + 1 + 0)
    assert tally.as_dict() == {"images": 5, "correct": 3, "accuracy": 0.6, "f1": round((0 + 0.5 + 0.8) / 3, 6),
                               "classes": ["bird", "cat", "dog"], "confusion": [[0, 1, 0], [0, 1, 1], [0, 0, 2]]}
    assert Tally().as_dict()["accuracy"] is None
    assert predicted_name("", 3) == "3" and predicted_name("cat", 0) == "cat" and predicted_name("", None) == ""
