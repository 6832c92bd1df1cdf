"""Inputs and OUT on object storage, against a real S3 API server on localhost (moto's server mode,
started here): the same files as a run on local disk with either engine, resume after SIGINT,
the lock by conditional create, and one-line errors for a missing bucket, bad credentials and a
missing extra."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")
pytest.importorskip("nibabel")

from xaicli._errors import StoreWriteError, UsageError, storage_failure  # noqa: E402
from xaicli._runs.lock import LOCK_NAME, store_lock  # noqa: E402
from xaicli._storage import Store, as_location, filesystem  # noqa: E402

from ..conftest import xai  # noqa: E402
from ..inputs.test_volumes import _volume  # noqa: E402
from .test_reliability import _many_images, _table  # noqa: E402

BUCKET = "xai-test"
RUN_FILES = ("predictions.csv", "run.json", "index.html")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _s3_server(**env: str):
    """moto's S3 server on a free port of localhost; yields its endpoint URL."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _use_endpoint(endpoint: str, key: str = "testing") -> None:
    """The environment every store client here (and Ray's workers, and subprocesses) reads."""
    import s3fs

    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=f"{key}-secret",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps a client per argument set, not per environment


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, with the bucket made and the environment pointing at it; restored after."""
    saved = {key: os.environ.get(key) for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                  "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")}
    with _s3_server() as endpoint:
        _use_endpoint(endpoint)
        fs, _ = filesystem(f"s3://{BUCKET}")
        fs.mkdir(BUCKET)
        yield fs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def images(s3, tmp_path_factory) -> Path:
    """A folder of images (a subfolder, a JPEG, a broken file, a NIfTI volume), also on the store at
    s3://BUCKET/in."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("store") / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 10)).save(folder / "a.png")
    Image.linear_gradient("L").resize((20, 50)).save(folder / "sub" / "b.JPG")
    Image.radial_gradient("L").convert("RGB").resize((24, 16)).save(folder / "c.jpg")
    (folder / "broken.png").write_bytes(b"not a png")
    _volume(folder / "sub")  # a file of several images: fetched once, its slices and mosaic from it
    s3.put(str(folder), f"{BUCKET}/in", recursive=True)
    return folder


OPTIONS = ("--method", "gradcam,saliency", "--save", "overlay,raw", "--top-k", "2", "--target", "topk", "-b", "2")


@pytest.fixture(scope="module")
def on_disk(tiny_model, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("disk") / "out"
    assert xai("run", tiny_model, images, "-o", out, *OPTIONS, "-q").exit_code == 1  # the broken image
    return out


def _downloaded(fs, url: str, folder: Path) -> Path:
    fs.get(url.removeprefix("s3://"), str(folder), recursive=True)
    return folder


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in RUN_FILES}


def _rows(out: Path, inputs: str, out_name: str) -> list[dict[str, str]]:
    rows = _table(out / "predictions.csv")
    for row in rows:
        row["input"] = row["input"].replace(inputs, "IN")
        row["output"] = row["output"].replace(out_name, "OUT")
    return rows


def _same_as_on_disk(fs, on_disk: Path, url: str, images: Path, folder: Path) -> dict:
    """The run at ``url`` has every file of the run on disk, byte for byte, and the same rows;
    returns its run.json."""
    got = _downloaded(fs, url, folder)
    assert _files(got) == _files(on_disk)
    assert _rows(got, f"s3://{BUCKET}/in", url) == _rows(on_disk, str(images), str(on_disk))
    return json.loads((got / "run.json").read_text())


def test_a_run_from_and_to_the_store_equals_one_on_disk(s3, tiny_model, images, on_disk, tmp_path):
    url = f"s3://{BUCKET}/runs/local"
    result = xai("run", tiny_model, f"s3://{BUCKET}/in/", "-o", url, *OPTIONS)
    assert result.exit_code == 1, result.output
    assert f"outputs in {url} (see status=error rows in {url}/predictions.csv)" in result.stderr
    assert f"report: {url}/index.html" in result.stderr
    manifest = _same_as_on_disk(s3, on_disk, url, images, tmp_path / "got")
    assert manifest["status"] == "complete" and manifest["options"]["out_dir"] == url
    assert manifest["options"]["inputs"] == [f"s3://{BUCKET}/in"]
    stored = s3.find(f"{BUCKET}/runs/local")
    assert f"{BUCKET}/runs/local/{LOCK_NAME}" not in stored
    assert f"{BUCKET}/runs/local/index.html" in stored
    assert any("/.thumbs/" in name for name in stored)
    every_byte = b"".join(Path(p).read_bytes() for p in (tmp_path / "got").rglob("*") if p.is_file())
    assert os.environ["AWS_SECRET_ACCESS_KEY"].encode() not in every_byte  # credentials stay out of the outputs
    page = (tmp_path / "got" / "index.html").read_text()
    assert f"{url}/predictions.csv" in page and "xai-spool" not in page

    # The page made again from the run on the store, and put back.
    s3.rm_file(f"{BUCKET}/runs/local/index.html")
    summary = tmp_path / "summary.md"
    remade = xai("report", url, "--summary", summary)
    assert remade.exit_code == 0, remade.output
    assert remade.output.splitlines() == [f"{url}/index.html", str(summary)]
    assert s3.cat_file(f"{BUCKET}/runs/local/index.html").decode() == page
    assert f"]({url}/" in summary.read_text()  # the summary links the objects by their URLs

    # Skipping reads what is there from one listing: nothing is explained again.
    again = xai("run", tiny_model, f"s3://{BUCKET}/in", "-o", url, *OPTIONS, "--skip-existing")
    assert again.exit_code == 1 and "0 of 8 images explained" in again.stderr and "7 skipped" in again.stderr
    refused = xai("run", tiny_model, f"s3://{BUCKET}/in", "-o", url, *OPTIONS)
    assert refused.exit_code == 2 and f"{url}/predictions.csv exists" in refused.stderr
    s3.rm([f"{BUCKET}/runs/local/predictions.csv", f"{BUCKET}/runs/local/run.json"])
    refused = xai("run", tiny_model, f"s3://{BUCKET}/in", "-o", url, *OPTIONS)  # the objects alone, from the listing
    assert refused.exit_code == 2 and f"{url}/a.png.gradcam.top1.png exists and" in refused.stderr


def test_the_ray_engine_writes_the_same_objects(s3, tiny_model, images, on_disk, tmp_path):
    pytest.importorskip("ray")
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20)  # after the environment is set: its workers read the store there
    try:
        url = f"s3://{BUCKET}/runs/ray"
        result = xai("run", tiny_model, f"s3://{BUCKET}/in", "-o", url, *OPTIONS, "--engine", "ray", "--workers", 2)
        assert result.exit_code == 1, result.output
        manifest = _same_as_on_disk(s3, on_disk, url, images, tmp_path / "got")
        assert manifest["engine"] == "ray" and manifest["status"] == "complete"
        assert not [name for name in s3.find(BUCKET) if ".xai-check-" in name]  # the nodes' check cleaned up
    finally:
        ray.shutdown()


def test_a_run_on_the_store_stopped_by_sigint_resumes_to_the_same_outputs(s3, tiny_model, tmp_path):
    images = tmp_path / "many"
    _many_images(images, 150)
    s3.put(str(images), f"{BUCKET}/many", recursive=True)
    whole = tmp_path / "whole"
    assert xai("run", tiny_model, images, "-o", whole, "-b", "2", "--save", "overlay,raw", "-q").exit_code == 1
    url = f"s3://{BUCKET}/runs/stopped"
    command = [sys.executable, "-m", "xaicli", "run", str(tiny_model), f"s3://{BUCKET}/many", "-o", url, "-b", "2",
               "--save", "overlay,raw", "-q"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len([n for n in s3.find(f"{BUCKET}/runs/stopped") if n.endswith(".npy")]) < 10:
        assert time.monotonic() < deadline and first.poll() is None, "the run ended or stalled before SIGINT"
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    stored = s3.find(f"{BUCKET}/runs/stopped")
    assert f"{BUCKET}/runs/stopped/{LOCK_NAME}" not in stored
    assert json.loads(s3.cat_file(f"{BUCKET}/runs/stopped/run.json"))["status"] == "stopped by SIGINT"
    rows = s3.cat_file(f"{BUCKET}/runs/stopped/predictions.csv").decode().splitlines()
    assert 10 <= len(rows) - 1 < 151
    # every object a row names is there, whole
    named = [line.rsplit(",", 1)[1] for line in rows[1:] if ",ok," in line]
    assert all(name.removeprefix("s3://") in stored for name in named)

    resumed = xai("run", tiny_model, f"s3://{BUCKET}/many", "-o", url, "-b", "2", "--save", "overlay,raw", "--resume")
    assert resumed.exit_code == 1, resumed.output
    got = _downloaded(s3, url, tmp_path / "got")
    assert _files(got) == _files(whole)
    assert _rows(got, f"s3://{BUCKET}/many", url) == _rows(whole, str(images), str(whole))
    assert json.loads((got / "run.json").read_text())["counts"]["resumed"] >= 9


def test_the_lock_is_a_conditional_create(s3, tmp_path):
    store = Store(f"s3://{BUCKET}/locked", tmp_path)
    assert store.conditional
    assert store.create("x", b"1") and not store.create("x", b"2") and store.read("x") == b"1"  # If-None-Match: *
    alive = {"pid": 1, "host": "another-host", "started": 0}
    s3.pipe_file(f"{BUCKET}/locked/{LOCK_NAME}", json.dumps(alive).encode())
    with pytest.raises(UsageError, match=rf"in use by another xai run \(process 1 on host another-host.*remove "
                                         rf"s3://{BUCKET}/locked/{LOCK_NAME}"):
        with store_lock(store):
            pass
    gone = {"pid": 2**22 + 7, "host": socket.gethostname(), "started": 0}  # no such process here
    s3.pipe_file(f"{BUCKET}/locked/{LOCK_NAME}", json.dumps(gone).encode())
    said = []
    with store_lock(store, said.append):
        holder = json.loads(s3.cat_file(f"{BUCKET}/locked/{LOCK_NAME}"))
        assert holder["pid"] == os.getpid()
    assert said and "took over the lock" in said[0]
    assert not s3.exists(f"{BUCKET}/locked/{LOCK_NAME}")


def test_missing_bucket_bad_credentials_and_missing_extra_are_one_line(s3, tiny_model, images, tmp_path):
    def one_line_error(*args) -> str:
        result = xai("run", tiny_model, *args)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        return result.stderr

    assert "the bucket no-such-bucket does not exist" in one_line_error(images, "-o", "s3://no-such-bucket/out")
    assert "input not found: s3://no-such-bucket/in" in one_line_error("s3://no-such-bucket/in", "-o", tmp_path / "o")
    assert "pip install 'xaicli[gcs]'" in one_line_error(images, "-o", "gs://bucket/out")
    assert as_location("file:///data/x%20y") == Path("/data/x y")  # a file URL is a local path
    # A put the store refuses mid-run stops the run as a full disk does (Record and the engines
    # handle it as any storage failure; see test_storage.py).
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(StoreWriteError) as refused:
        Store("s3://no-such-bucket/out", tmp_path).put(tmp_path / "a.png")
    assert storage_failure(refused.value).startswith("the store refused a write: ")
    assert "s3://no-such-bucket/out/a.png" in storage_failure(refused.value)
    assert (tmp_path / "a.png").exists()  # kept when not put

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    with _s3_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as checking:  # this one checks credentials
        _use_endpoint(checking, key="nobody")
        try:
            line = one_line_error(images, "-o", f"s3://{BUCKET}/out")
            assert f"access to s3://{BUCKET}/out denied" in line and "credentials" in line
            assert "denied" in one_line_error(f"s3://{BUCKET}/in", "-o", tmp_path / "o2")
        finally:
            _use_endpoint(endpoint)
