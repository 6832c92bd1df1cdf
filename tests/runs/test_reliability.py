"""Bad files, failing batches, interrupted and resumed runs: one problem never costs the rest."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ..conftest import xai


RNG = np.random.default_rng(11)


def _table(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: cheap stand-in for a huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def _write_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """Every kind of awkward file users have; returns name -> (status, words the message or
    note must contain). Names are relative to ``folder``; file names are str except one."""
    folder.mkdir()
    expected: dict[str, tuple[str, str]] = {}

    def save(name: str, image: Image.Image, status_note: tuple[str, str] = ("ok", ""), **kwargs) -> None:
        image.save(folder / name, **kwargs)
        expected[name] = status_note

    def raw(name: str, data: bytes, status: str, words: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = (status, words)

    raw("empty.jpg", b"", "error", "not a readable image")
    raw("text named.jpg", b"I am a text file, not a JPEG\n", "error", "not a readable image")
    raw("truncated.jpg", _jpeg_bytes(_noise(64, 64))[:700], "error", "truncated")
    good_png = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(good_png, "PNG")
    raw("truncated.png", good_png.getvalue()[:500], "error", "cannot decode image")
    raw("huge.png", _png_header_only(100_000, 100_000), "error", "over the pixel limit")
    save("cmyk.jpg", Image.fromarray(_noise(20, 24, 4), mode="CMYK"))
    save("gray16.png", Image.fromarray((RNG.integers(0, 65536, (20, 24))).astype(np.uint16)))
    palette = Image.fromarray(_noise(20, 24, 1)[..., 0], mode="L").convert("P")
    save("palette_transparent.png", palette, transparency=0)
    save("rgba.png", Image.fromarray(_noise(20, 24, 4), mode="RGBA"))
    save("la.png", Image.fromarray(_noise(20, 24, 2), mode="LA"))
    save("bilevel.png", Image.fromarray(_noise(20, 24, 1)[..., 0] > 127))
    save("float.tiff", Image.fromarray(RNG.random((20, 24), dtype=np.float32), mode="F"))
    frames = [Image.fromarray(_noise(16, 16)) for _ in range(3)]
    for name in ("animated.gif", "animated.webp"):
        save(name, frames[0], ("ok", "first frame of 3"), save_all=True, append_images=frames[1:])
    rotated = Image.fromarray(_noise(10, 30))
    exif = rotated.getexif()
    exif[0x0112] = 6
    save("exif_rotated.jpg", rotated, exif=exif)
    save("one_pixel.png", Image.fromarray(_noise(1, 1)))
    save("name with spaces.png", Image.fromarray(_noise(12, 12)))
    save("over_max_pixels.png", Image.fromarray(_noise(120, 100)), ("error", "over the limit of 10000"))
    os.symlink(folder / "gone.png", folder / "broken_link.png")
    expected["broken_link.png"] = ("error", "broken link")
    if os.geteuid() != 0:  # root reads any file, so the case only exists for other users
        save("unreadable.png", Image.fromarray(_noise(8, 8)), ("error", "permission denied"))
        os.chmod(folder / "unreadable.png", 0)
    Image.fromarray(_noise(9, 9)).save(os.fsencode(folder) + b"/caf\xe9.png")
    expected["caf\\udce9.png"] = ("ok", "")  # not valid UTF-8: the table escapes the byte
    return expected


def test_every_bad_file_is_an_error_row_with_a_reason_and_the_rest_are_explained(tiny_model, tmp_path):
    corpus = tmp_path / "corpus"
    expected = _write_corpus(corpus)
    out = tmp_path / "out"
    result = xai("run", tiny_model, corpus, "-o", out, "--max-pixels", 10_000, "-b", 4, "-q")
    assert result.exit_code == 1, result.output
    rows = {Path(r["input"]).name: r for r in _table(out / "predictions.csv")}
    assert set(rows) == set(expected)
    for name, (status, words) in expected.items():
        row = rows[name]
        assert row["status"] == status, (name, row)
        assert words in (row["error"] if status == "error" else row["note"]), (name, row)
        if status == "ok":
            assert 0 < float(row["pred_prob"]) <= 1 and row["output"].endswith(f"{name}.gradcam.png")
            assert "\\udc" in name or Path(row["output"]).exists()
        else:
            assert row["output"] == "" and "\n" not in row["error"]
    rotated = Image.open(out / "exif_rotated.jpg.gradcam.png")
    assert rotated.size == (10, 30)  # the overlay is upright, like the image shown to people
    assert os.path.exists(os.fsencode(out) + b"/caf\xe9.png.gradcam.png")


def test_max_pixels_raises_pillows_own_limit_too(tiny_model, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "huge.png").write_bytes(_png_header_only(100_000, 100_000))
    out = tmp_path / "out"
    assert xai("run", tiny_model, folder, "-o", out, "--max-pixels", 10**11, "-q").exit_code == 1
    # past the pixel limit, the file is read, and its missing pixel data is the reason now
    assert _table(out / "predictions.csv")[0]["error"].startswith("cannot decode image")


@pytest.fixture(scope="module")
def overflowing_model(tmp_path_factory) -> Path:
    """Finite scores for a black image, infinite (softmax NaN) for any other: a model that
    breaks on some inputs."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1e30, name="amplify")(inputs)
    x = layers.Conv2D(2, 1, kernel_initializer="ones", name="conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant(1e10),
                           name="head")(x)
    path = tmp_path_factory.mktemp("overflow") / "overflow.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_non_finite_scores_fail_only_their_images(overflowing_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a_black.png")
    Image.fromarray(_noise(8, 8)).save(folder / "b_noise.png")
    Image.new("RGB", (8, 8)).save(folder / "c_black.png")
    out = tmp_path / "out"
    result = xai("run", overflowing_model, folder, "-o", out, "-b", 3, "-q")
    assert result.exit_code == 1
    statuses = [(Path(r["input"]).name, r["status"], r["error"]) for r in _table(out / "predictions.csv")]
    assert statuses == [("a_black.png", "ok", ""),
                        ("b_noise.png", "error", "the model produced non-finite scores (NaN or inf) for this image"),
                        ("c_black.png", "ok", "")]


def test_fail_fast_stops_after_the_batch_of_the_first_failure(tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a_broken.jpg").write_bytes(b"not a jpeg")
    for i in range(8):
        Image.fromarray(_noise(16, 16)).save(folder / f"b{i}.png")
    out = tmp_path / "out"
    result = xai("run", tiny_model, folder, "-o", out, "-b", 2, "--fail-fast")
    assert result.exit_code == 1
    assert "stopped at the first failure (--fail-fast): " in result.stderr and "a_broken.jpg" in result.stderr
    rows = _table(out / "predictions.csv")
    assert 2 <= len(rows) < 9 and rows[0]["status"] == "error"
    assert json.loads((out / "run.json").read_text())["status"] == "stopped by the first failure (--fail-fast)"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64), "cannot"),
    (lambda p: p.write_text("not a model"), "cannot"),
])
def test_corrupt_model_files_are_one_line_errors(tmp_path, make, message):
    model = tmp_path / "model.h5"
    make(model)
    (tmp_path / "a.png").write_bytes(b"")
    result = xai("run", model, tmp_path / "a.png", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith("xai: error: ") and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_unwritable_output_folder_is_a_one_line_error(tiny_model, image_folder, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    result = xai("run", tiny_model, image_folder, "-o", locked / "out")
    assert result.exit_code == 2 and "cannot write to output folder" in result.stderr


def test_symlink_loops_and_an_output_folder_inside_the_inputs_are_not_walked(tiny_model, tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_noise(16, 16)).save(folder / "sub" / "a.png")
    os.symlink(folder, folder / "sub" / "loop")
    out = folder / "out"
    for _ in range(2):  # the second run must not find the first run's overlays
        result = xai("run", tiny_model, folder, "-o", out, "--overwrite", "-q")
        assert result.exit_code == 0, result.output
        assert [Path(r["input"]).name for r in _table(out / "predictions.csv")] == ["a.png"]


def _many_images(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(_noise(20, 20)).save(folder / f"img{i:04d}.png")
    (folder / "img0100.png").write_bytes(b"broken")  # error rows must come out the same too


def _start(model: Path, images: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "xaicli", "run", str(model), str(images), "-o", str(out), "-b", "2",
               "--save", "overlay,raw", "-q", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(table: Path, rows: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if table.exists() and table.read_text().count("\n") > rows:
            return
        time.sleep(0.01)
    pytest.fail("the run ended or stalled before it could be interrupted")


def test_interrupted_run_resumed_gives_the_same_table_and_files(tiny_model, tmp_path):
    images = tmp_path / "images"
    _many_images(images, 400)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _start(tiny_model, images, whole).wait() == 1  # the broken image

    first = _start(tiny_model, images, parts)
    _wait_for_rows(parts / "predictions.csv", 10, first)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    assert not (parts / ".xai.lock").exists()
    interrupted = _table(parts / "predictions.csv")
    assert 10 <= len(interrupted) < 401
    assert json.loads((parts / "run.json").read_text())["status"] == "stopped by SIGINT"

    resumed = _start(tiny_model, images, parts, "--resume")
    assert resumed.wait() == 1
    resumed_rows = _table(parts / "predictions.csv")
    whole_rows = _table(whole / "predictions.csv")
    for row in whole_rows + resumed_rows:
        row["output"] = Path(row["output"]).name
    assert resumed_rows == whole_rows
    assert json.loads((parts / "run.json").read_text())["counts"]["resumed"] == len(interrupted) - (
        any(r["status"] == "error" for r in interrupted))
    whole_files = sorted(p.name for p in whole.iterdir())
    assert whole_files == sorted(p.name for p in parts.iterdir())
    for name in whole_files:
        if name.endswith((".png", ".npy")):
            assert (whole / name).read_bytes() == (parts / name).read_bytes(), name


def test_sigterm_stops_after_the_batch_with_exit_143(tiny_model, tmp_path):
    images = tmp_path / "images"
    _many_images(images, 400)
    out = tmp_path / "out"
    process = _start(tiny_model, images, out)
    _wait_for_rows(out / "predictions.csv", 4, process)
    second = xai("run", tiny_model, images, "-o", out, "--resume")  # the same OUT while the first runs
    assert second.exit_code == 2 and len(second.stderr.strip().splitlines()) == 1
    assert f"in use by another xai run (process {process.pid} on host" in second.stderr
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 143
    assert not (out / ".xai.lock").exists()
    rows = _table(out / "predictions.csv")
    assert all(Path(r["output"]).exists() for r in rows if r["status"] == "ok")
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_resume_refuses_other_options(tiny_model, image_folder, tmp_path):
    out = tmp_path / "out"
    assert xai("run", tiny_model, image_folder, "-o", out, "-q").exit_code == 1
    result = xai("run", tiny_model, image_folder, "-o", out, "--resume", "--method", "saliency")
    assert result.exit_code == 2 and "used other settings (methods)" in result.stderr
    assert xai("run", tiny_model, image_folder, "-o", out, "--resume", "-b", 3, "-q").exit_code == 1
    both = xai("run", tiny_model, image_folder, "-o", out, "--resume", "--overwrite")
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_resume_redoes_images_whose_files_are_missing_and_drops_images_no_longer_given(tiny_model, image_folder,
                                                                                      tmp_path):
    (image_folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert xai("run", tiny_model, image_folder, "-o", out, "-q").exit_code == 0
    before = (out / "predictions.csv").read_text()
    (out / "a.png.gradcam.png").unlink()
    (image_folder / "c.webp").unlink()
    result = xai("run", tiny_model, image_folder, "-o", out, "--resume")
    assert result.exit_code == 0, result.output
    assert "2 of 2 images explained (1 by the earlier run)" in result.stderr
    assert (out / "a.png.gradcam.png").exists()
    kept = [line for line in before.splitlines() if "c.webp" not in line]
    assert (out / "predictions.csv").read_text().splitlines() == kept
    assert json.loads((out / "run.json").read_text())["counts"] == {
        "images": 2, "explained": 1, "failed": 0, "skipped": 0, "resumed": 1}


def test_debug_shows_the_traceback_behind_a_one_line_error(tmp_path):
    model = tmp_path / "model.keras"
    model.write_text("not a model")
    (tmp_path / "a.png").write_bytes(b"")
    plain = xai("run", model, tmp_path / "a.png", "-o", tmp_path / "out")
    debug = xai("run", model, tmp_path / "a.png", "-o", tmp_path / "out", "--debug")
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.stderr and "Traceback (most recent call last)" in debug.stderr
    assert plain.stderr.strip().splitlines()[-1] == debug.stderr.strip().splitlines()[-1]


def test_a_closed_pipe_ends_the_run_like_a_signal_and_resume_finishes_it(tiny_model, tmp_path):
    """`xai run … --predictions - | head -1`: the reader going away is a pipeline's normal end."""
    images = tmp_path / "images"
    _many_images(images, 120)

    def xai(out: Path, *extra: str) -> str:
        return " ".join([sys.executable, "-m", "xaicli", "run", str(tiny_model), str(images), "-o", str(out),
                         "--format", "jsonl", "--predictions", "-", "-b", "2", "--save", "overlay,raw", *extra])

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    script = (f"{xai(whole, '-q')} > {tmp_path / 'whole.jsonl'}; echo $? > {tmp_path / 'whole.status'}; "
              f"{xai(parts)} 2> {tmp_path / 'stderr.txt'} | head -1; echo ${{PIPESTATUS[0]}} > {tmp_path / 'status'}")
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
    assert (tmp_path / "whole.status").read_text().strip() == "1"  # the broken image
    assert json.loads(shown.stdout)["input"].endswith("img0000.png")
    assert (tmp_path / "status").read_text().strip() == "141"
    said = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in said and "Exception" not in said and "Error" not in said
    told = [line for line in said.splitlines() if line.startswith("xai:")]  # besides the progress bar
    assert len(told) == 2 and told[0].startswith("xai: 120 images; layer"), said  # the start, and the end:
    assert told[1].startswith("xai: stopped by a closed standard output")
    assert told[1].endswith("run again with --resume to finish") and said.strip().endswith(told[1])
    manifest = json.loads((parts / "run.json").read_text())
    assert manifest["status"].startswith("stopped by SIGPIPE")
    assert not (parts / ".xai.lock").exists()

    again = subprocess.run(["bash", "-c", f"{xai(parts, '-q')} > /dev/null"], capture_output=True, text=True)
    assert again.returncode == 2 and "holds an interrupted run" in again.stderr
    assert again.stderr.strip().endswith("--resume, or start again with --overwrite")
    assert f"continue it with xai run {tiny_model}" in again.stderr

    resumed = subprocess.run(["bash", "-c", xai(parts, "-q", "--resume")], capture_output=True, text=True)
    assert resumed.returncode == 1, resumed.stderr
    rows = [json.loads(line) for line in resumed.stdout.splitlines()]
    whole_rows = [json.loads(line) for line in (tmp_path / "whole.jsonl").read_text().splitlines()]
    for row in rows + whole_rows:
        row["output"] = row["output"] and Path(row["output"]).name
    assert rows == whole_rows and len(rows) == 120
    assert json.loads((parts / "run.json").read_text())["status"] == "complete"
    for file in whole.iterdir():
        if file.suffix in (".png", ".npy"):
            assert file.read_bytes() == (parts / file.name).read_bytes(), file.name


@pytest.mark.parametrize("command", [["info", "--json"], ["layers", "--all"]])
def test_a_closed_pipe_after_other_commands_is_status_141_and_silent(tiny_model, command):
    script = f"{sys.executable} -m xaicli {' '.join(command)} {tiny_model} | head -c 10 > /dev/null; " \
             "echo ${PIPESTATUS[0]}"
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert shown.stdout.strip() in ("0", "141")  # 0 when every byte fitted in the pipe before head left
    assert shown.stderr == ""
