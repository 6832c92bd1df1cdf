"""A run whose output folder takes no more files: a full disk (a real tmpfs of 1 MB mounted by the
test), a folder made read-only mid-run (bind-mounted read-only), a folder moved away mid-run. The run stops as on SIGINT:
no partial file under a final name, only whole rows in the table, run.json says why, the lock is
gone, exit 1 with one line; after space is freed, --resume finishes byte-identical to a run that
never stopped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import xai

IMAGES = 30  # noise pictures whose overlays (about 95 KB each) fill the 1 MB disk at the seventh or so


def _mount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True, capture_output=True)


def _remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


@pytest.fixture()
def small_disk(tmp_path) -> Path:
    """A 1 MB tmpfs mounted at a fresh folder (root only: skipped elsewhere, never under CI)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        _mount(folder, "size=1m")
    except (OSError, subprocess.CalledProcessError) as exc:
        reason = getattr(exc, "stderr", b"") or str(exc)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root and must mount a tmpfs for this test: {reason!r}")
        pytest.skip(f"mounting a tmpfs is not allowed here: {reason!r}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for index in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(folder / f"n{index:02d}.png")
    return folder


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _files(out: Path) -> dict[str, bytes]:
    """Every file a run leaves but run.json and the page (which hold times and paths)."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*")
            if path.is_file() and path.name not in ("run.json", "index.html", "predictions.csv")}


def _table_without_folder(out: Path) -> list[dict[str, str]]:
    return [{**row, "output": row["output"].removeprefix(str(out))} for row in _rows(out)]


def _left_behind(out: Path) -> list[Path]:
    return [path for path in out.rglob("*") if path.name.endswith(".tmp") or path.name == ".xai.lock"]


def _assert_stopped_whole(out: Path, removable: bool = True) -> list[dict[str, str]]:
    """What a stopped run left is whole: every row's files are there and complete, no file under
    a final name is cut, and (where the folder lets anything be removed) no temporary file or
    lock is left. Returns the rows."""
    rows = _rows(out)
    assert rows and all(row["status"] == "ok" for row in rows)
    for row in rows:
        with Image.open(row["output"]) as picture:
            picture.load()
    for path in out.rglob("*.png"):
        with Image.open(path) as picture:
            picture.load()  # a cut PNG raises here
    assert not (removable and _left_behind(out))
    return rows


def _same_as_a_run_that_never_stopped(model: Path, images: Path, out: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    assert xai("run", model, images, "-o", clean, "-b", 4, "-q").exit_code == 0
    assert _files(out) == _files(clean)
    assert _table_without_folder(out) == _table_without_folder(clean)


def test_a_full_disk_stops_the_run_and_resume_after_freeing_space_finishes_it(tiny_model, noise, small_disk, tmp_path):
    out = small_disk / "out"
    result = xai("run", tiny_model, noise, "-o", out, "-b", 4)
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("xai: stopped")]
    assert line.startswith(f"xai: stopped: disk full at {out}/") and "images need about" in line
    assert line.endswith("free space and run again with --resume")
    status = json.loads((out / "run.json").read_text())["status"]
    assert status.startswith(f"stopped: disk full at {out}/")
    rows = _assert_stopped_whole(out)
    assert 0 < len(rows) < IMAGES

    _remount(small_disk, "size=64m")
    resumed = xai("run", tiny_model, noise, "-o", out, "-b", 4, "--resume", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    _same_as_a_run_that_never_stopped(tiny_model, noise, out, tmp_path)


def _bind_read_only(folder: Path) -> None:
    """Mount ``folder`` onto itself, then make that mount read-only. The kernel refuses the second
    step (EBUSY) while a file is open for writing through the new mount, which the run's writer
    threads may just have done: it is tried again until they are between two files."""
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True, capture_output=True)
    for _ in range(200):
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0:
            return
        time.sleep(0.01)
    pytest.fail(f"{folder} never became read-only")


def test_a_folder_turned_read_only_mid_run_stops_it_and_resume_finishes_it(tiny_model, noise, small_disk, tmp_path):
    """OUT bind-mounted read-only onto itself at the third batch (as a remount read-only of a
    file system with errors does): the files already open are still written, every new one fails."""
    import xaicli

    _remount(small_disk, "size=64m")
    out = small_disk / "out"
    batches = []

    def turn_read_only_at_the_third_batch() -> None:
        batches.append(1)
        if len(batches) == 3:
            _bind_read_only(out)

    summary = xaicli.run(tiny_model, noise, out, batch_size=4, stop=turn_read_only_at_the_third_batch)
    assert summary.exit_status == 1 and summary.status.startswith(f"stopped: read-only at {out}/")
    assert not summary.manifest_written  # run.json cannot be written on a read-only folder either
    _assert_stopped_whole(out, removable=False)
    subprocess.run(["umount", str(out)], check=True, capture_output=True)
    assert xai("run", tiny_model, noise, "-o", out, "-b", 4, "--resume", "-q").exit_code == 0
    assert not _left_behind(out)  # the finished run took what the read-only folder kept
    _same_as_a_run_that_never_stopped(tiny_model, noise, out, tmp_path)


def test_a_folder_removed_mid_run_stops_it_in_one_line(tiny_model, noise, tmp_path):
    """OUT moved away at the third batch (as a cleanup job or another user would remove it): the
    writes under way may make the folder anew, but the run notices it is not its own and stops."""
    import xaicli

    out = tmp_path / "out"
    batches = []

    def remove_the_folder_at_the_third_batch() -> None:
        batches.append(1)
        if len(batches) == 3:
            out.rename(tmp_path / "elsewhere")

    summary = xaicli.run(tiny_model, noise, out, batch_size=4, stop=remove_the_folder_at_the_third_batch)
    assert summary.exit_status == 1
    assert summary.status == f"stopped: the output folder {out} vanished"
    assert not summary.manifest_written and not (out / "run.json").exists()
