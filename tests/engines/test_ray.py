"""--engine ray against a real local Ray (2 CPUs): the same bytes as the local engine, error rows,
resume from one engine to the other, SIGINT, and a replica killed mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("nibabel")

from xaicli._engines import ray as ray_engine  # noqa: E402
from xaicli._errors import UsageError  # noqa: E402

from ..conftest import xai  # noqa: E402
from ..runs.test_reliability import _many_images  # noqa: E402
from ..inputs.test_volumes import _volume  # noqa: E402

RUN_FILES = ("predictions.csv", "run.json", "index.html")
KINDS = ("--method", "gradcam,saliency,integrated-gradients", "--save", "overlay,heatmap,raw,panel", "--top-k", "2",
         "--target", "topk", "--ig-steps", "4", "-b", "1")


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray with 2 CPUs, as a small machine has: the runs in this process use it, and
    runs in subprocesses join it at its address. Stopped after this module, so its processes do
    not take CPU from the rest of the suite."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _files(out: Path) -> dict[str, bytes]:
    """Every output but the run's own files, by path under OUT."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in RUN_FILES}


def _table(out: Path) -> str:
    return (out / "predictions.csv").read_text(encoding="utf-8").replace(str(out), "OUT")


def _manifest(out: Path) -> dict:
    """run.json without what may differ between engines: the engine, the timing and OUT."""
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    for key in ("engine", "seconds", "ray"):
        manifest.pop(key, None)
    for key in ("engine", "out_dir", "workers"):
        manifest["options"].pop(key)
    return manifest


def _same_outputs(first: Path, second: Path) -> None:
    first_files, second_files = _files(first), _files(second)
    assert first_files.keys() == second_files.keys()
    assert [name for name in first_files if first_files[name] != second_files[name]] == []
    assert _table(first) == _table(second)


def _same_on_both_engines(model: Path, inputs: Path, out: Path, *options: object) -> Path:
    """``xai run`` of ``inputs`` on the local engine and on two Ray replicas, batches of 2, into
    OUT/local and OUT/ray: both succeed with the same files and table; OUT/local is returned."""
    runs = {engine: out / engine for engine in ("local", "ray")}
    for engine, folder in runs.items():
        result = xai("run", model, inputs, "-o", folder, *options, "-b", "2", "--engine", engine,
                     *(("--workers", 2) if engine == "ray" else ()))
        assert result.exit_code == 0, result.output
    _same_outputs(runs["local"], runs["ray"])
    return runs["local"]


@pytest.fixture(scope="module")
def sample_runs(ray_cluster, tiny_model, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Three images, a broken file and a 6-slice volume (for a mosaic), explained by each engine
    with several methods and every --save kind: (images, local OUT, Ray OUT)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("samples")
    scans = folder / "images"
    (scans / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 10)).save(scans / "a.png")
    Image.linear_gradient("L").resize((20, 50)).save(scans / "sub" / "b.JPG")
    Image.radial_gradient("L").convert("RGBA").resize((16, 16)).save(scans / "c.webp")
    (scans / "broken.jpg").write_bytes(b"this is not a jpeg")
    _volume(scans)
    local, on_ray = folder / "local", folder / "ray"
    assert xai("run", tiny_model, scans, "-o", local, *KINDS, "-q").exit_code == 1
    result = xai("run", tiny_model, scans, "-o", on_ray, *KINDS, "--engine", "ray", "--workers", 2)
    assert result.exit_code == 1, result.output  # the broken image, as locally
    (folder / "ray-stderr.txt").write_text(result.stderr)
    return scans, local, on_ray


def test_two_replicas_write_the_same_bytes_as_the_local_engine(sample_runs):
    _, local, on_ray = sample_runs
    _same_outputs(local, on_ray)
    assert _manifest(local) == _manifest(on_ray)
    assert json.loads((on_ray / "run.json").read_text())["engine"] == "ray"
    stderr = (on_ray.parent / "ray-stderr.txt").read_text()
    assert "1 failed" in stderr and stderr.count("Ray") == 1  # Ray's own logging stays out
    assert "; on Ray: 2 replicas (0.5 CPU each) on 1 node" in stderr
    assert json.loads((on_ray / "run.json").read_text())["ray"] == {"replicas": 2, "cpus_per_replica": 0.5,
                                                                     "gpus_per_replica": 0.0, "nodes": 1}
    errors = [line for line in _table(on_ray).splitlines() if line.split(",")[1] == "error"]
    assert len(errors) == 6 and all("broken.jpg" in line for line in errors)  # one per method and rank
    assert (on_ray / "brain.nii.gz.gradcam.top1.mosaic.png").exists()


def test_a_run_resumed_by_the_other_engine_gives_the_same_outputs(sample_runs, tiny_model, tmp_path):
    scans, local, on_ray = sample_runs
    for first, then, whole in ((on_ray, "local", local), (local, "ray", on_ray)):
        out = tmp_path / f"then-{then}"
        shutil.copytree(first, out)
        for name in ("predictions.csv", "run.json"):  # as if the first run had written here
            (out / name).write_text((out / name).read_text().replace(str(first), str(out)))
        # Interrupted after the first image and two slices: the volume is done again whole.
        table = out / "predictions.csv"
        table.write_text("".join(table.read_text().splitlines(keepends=True)[:1 + 6 * 3]))
        (out / "sub" / "b.JPG.saliency.top2.png").unlink()
        resumed = xai("run", tiny_model, scans, "-o", out, *KINDS, "--engine", then, "--resume", "-q")
        assert resumed.exit_code == 1, resumed.output
        _same_outputs(whole, out)
        counts = json.loads((out / "run.json").read_text())["counts"]
        assert counts == {"images": 8, "explained": 6, "failed": 1, "skipped": 0, "resumed": 1}


def _start(model: Path, images: Path, out: Path, *extra: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "xaicli", "run", model, images, "-o", out, "-b", 2, "--save", "overlay,raw",
               "-q", *extra]
    return subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(condition, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"the run ended or stalled first: {process.stderr.read() if process.poll() is not None else ''}")


def _rows(out: Path) -> int:
    table = out / "predictions.csv"
    return table.read_text().count("\n") - 1 if table.exists() else 0


def _replica_processes() -> list[int]:
    """Process ids of the Ray workers holding a replica (Ray titles them after the actor)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"MapBatches(_Replica)" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def many(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """300 small images (one broken) and the local engine's outputs of them."""
    folder = tmp_path_factory.mktemp("many")
    images, local = folder / "images", folder / "local"
    _many_images(images, 300)
    assert _start(tiny_model, images, local).wait() == 1  # the broken image
    return images, local


def test_a_replica_killed_mid_run_is_replaced_and_the_outputs_are_the_same(ray_cluster, many, tiny_model, tmp_path):
    images, local = many
    on_ray = tmp_path / "ray"
    run = _start(tiny_model, images, on_ray, "--engine", "ray", "--ray-address", ray_cluster)
    _wait(lambda: _rows(on_ray) >= 16 and _replica_processes(), run)
    for pid in _replica_processes():
        os.kill(pid, signal.SIGKILL)
    assert _rows(on_ray) < 300  # killed mid-run
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    _same_outputs(local, on_ray)
    assert json.loads((on_ray / "run.json").read_text())["counts"]["images"] == 300


def test_sigint_stops_a_ray_run_and_the_local_engine_finishes_it(ray_cluster, many, tiny_model, tmp_path):
    images, local = many
    parts = tmp_path / "parts"
    run = _start(tiny_model, images, parts, "--engine", "ray", "--ray-address", ray_cluster)
    _wait(lambda: _rows(parts) >= 16, run)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert json.loads((parts / "run.json").read_text())["status"] == "stopped by SIGINT"
    assert 16 <= _rows(parts) < 300
    assert _start(tiny_model, images, parts, "--resume").wait() == 1
    _same_outputs(local, parts)


def test_replicas_leave_a_cpu_to_ray_data(monkeypatch):
    def cluster(nodes: int, cpus: float) -> None:
        monkeypatch.setattr(ray_engine.ray, "nodes", lambda: [{"Alive": True}] * nodes + [{"Alive": False}])
        monkeypatch.setattr(ray_engine.ray, "cluster_resources", lambda: {"CPU": cpus})

    def pool(workers, gpus=0.0):
        arguments = ray_engine.pool_for(workers, gpus).arguments()
        return arguments["compute"].min_size, arguments["num_cpus"], arguments.get("num_gpus")

    cluster(1, 2)
    assert pool(None) == (1, 1, None)  # one replica per node, one CPU left
    assert pool(2) == (2, 0.5, None)
    assert pool(3, 0.5) == (3, 0.33, 0.5)
    cluster(4, 64)
    assert pool(None) == (4, 15, None)
    cluster(1, 1)
    assert pool(None) == (1, 0.5, None)
    with pytest.raises(UsageError, match="more replicas than Ray can place"):
        pool(300)


def test_a_node_that_cannot_see_the_output_folder_is_named(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "token").write_text("token")
    assert ray_engine.sees(str(out), "token", str(tmp_path)) == ""
    assert "No such file" in ray_engine.sees(str(tmp_path / "elsewhere"), "token", str(tmp_path))
    assert "the driver's" in ray_engine.sees(str(out), "token", str(tmp_path / "gone"))
    (out / "token").write_text("another run's")
    assert "something else" in ray_engine.sees(str(out), "token", str(tmp_path))


def test_the_ray_options_go_with_the_ray_engine_and_need_its_extra(tiny_model, image_folder, tmp_path, monkeypatch):
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--ray-address", "auto")
    assert result.exit_code == 2 and "--ray-address goes with --engine ray" in result.stderr
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--engine", "ray", "--gpus-per-worker", 1.5)
    assert result.exit_code == 2 and "whole number" in result.stderr
    with socket.socket() as closed:  # a port nothing listens at
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    addresses = {f"127.0.0.1:{port}": "nothing answers at", f"ray://127.0.0.1:{port}": "nothing answers at",
                 "headnode": "give 'auto', HOST:PORT"}
    for address, says in addresses.items():
        result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--engine", "ray",
                      "--ray-address", address)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and says in result.stderr
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("ray") else real(name, *a))
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--engine", "ray")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert re.search(r"pip install 'xaicli\[ray\]'", result.stderr)
    assert not (tmp_path / "out").exists()


def test_a_replica_that_cannot_build_the_model_stops_the_run_with_one_line(ray_cluster, tiny_model, image_folder,
                                                                           tmp_path):
    driver_only = tmp_path / "driver_only.py"  # custom objects that import on the driver alone
    driver_only.write_text(f"import os\nif os.getpid() != {os.getpid()}:\n    raise ImportError('not on this node')\n")
    result = xai("run", tiny_model, image_folder, "-o", tmp_path / "out", "--engine", "ray",
                  "--custom-objects", driver_only)
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("xai: error: --engine ray: a replica could not prepare the model on its worker: "
                           "--custom-objects "), result.stderr
    assert last.endswith("cannot import it: not on this node") and "Traceback" not in result.stderr


def test_skip_existing_passes_by_the_same_images_on_both_engines(sample_runs, tiny_model, tmp_path):
    scans, local, _ = sample_runs
    outs = {}
    for engine in ("local", "ray"):
        out = outs[engine] = tmp_path / engine
        shutil.copytree(local, out)
        for path in out.glob("c.webp.*"):  # one image lost its files
            path.unlink()
        result = xai("run", tiny_model, scans, "-o", out, *KINDS, "--engine", engine, "--skip-existing", "-q")
        assert result.exit_code == 1, result.output
    _same_outputs(outs["local"], outs["ray"])
    statuses = {}
    for line in _table(outs["ray"]).splitlines()[1:]:
        statuses.setdefault(Path(line.split(",")[0]).name, set()).add(line.split(",")[1])
    assert statuses.pop("c.webp") == {"ok"} and statuses.pop("broken.jpg") == {"error"}
    assert set().union(*statuses.values()) == {"skipped"}


def test_fail_fast_on_ray_takes_no_block_after_the_failure(sample_runs, tiny_model, tmp_path):
    scans = sample_runs[0]
    out = tmp_path / "out"
    result = xai("run", tiny_model, scans, "-o", out, *KINDS, "--engine", "ray", "--fail-fast")
    assert result.exit_code == 1, result.output
    assert "stopped at the first failure (--fail-fast)" in result.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "stopped by the first failure (--fail-fast)"
    inputs = [Path(line.split(",")[0]).name for line in _table(out).splitlines()[1:]]
    assert "broken.jpg" in inputs and "b.JPG" not in inputs  # the block after the failure is dropped


def test_a_multilabel_model_gives_the_same_labels_and_files_on_both_engines(ray_cluster, tmp_path):
    """Labels present differ from image to image (and slice to slice of a volume's mosaic): the
    rows, maps and mosaics are the same whichever engine chose them."""
    from PIL import Image

    from ..explain.test_heads import _cnn_head

    model = tmp_path / "multilabel.keras"
    _cnn_head(4, "sigmoid", 1).save(model)
    scans = tmp_path / "images"
    scans.mkdir()
    for index in range(5):
        Image.effect_mandelbrot((16 + 4 * index, 16), (-2 + index / 4, -1.2, 0.8, 1.2), 50).convert("RGB").save(
            scans / f"m{index}.png")
    _volume(scans)
    local = _same_on_both_engines(model, scans, tmp_path, "--threshold", "0.5", "--save", "overlay,raw")
    assert len(_table(local).splitlines()) > 1 + 5 + 6  # some image or slice has several labels present
    assert list(local.glob("brain.nii.gz.gradcam.label*.mosaic.png"))


@pytest.mark.parametrize("region", ["predicted", "box:2,2,20,30"])
def test_a_segmentation_gives_the_same_regions_and_files_on_both_engines(ray_cluster, tmp_path, region):
    """Each image's classes and regions come from its prediction (or a box placed on each
    image's own grid): the rows, maps and outlined overlays are the same whichever engine ran."""
    from ..explain.test_segmentation import _save, _shapes, _unet

    model = tmp_path / "unet.keras"
    _unet(3, "softmax", 5).save(model)
    images, _ = _shapes(5, 11)
    _save(images, tmp_path / "images")
    local = _same_on_both_engines(model, tmp_path / "images", tmp_path, "--region", region, "--save", "overlay,raw")
    assert len(_table(local).splitlines()) > 1 + 5  # some image has two classes


def test_a_volume_model_writes_the_same_maps_over_the_scans_on_both_engines(ray_cluster, tmp_path):
    """A 3-D model's NIfTI maps, planes and mosaics, written by replicas, are the local engine's bytes."""
    import nibabel
    import numpy as np

    from ..explain.test_volume_models import _affine, _network, _scan

    model = tmp_path / "cnn3d.keras"
    _network().save(model)
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(2)
    for index in range(4):
        nibabel.save(nibabel.Nifti1Image(_scan(rng, bool(index % 2))[0], _affine()), scans / f"v{index}.nii.gz")
    local = _same_on_both_engines(model, scans, tmp_path, "--method", "gradcam,scorecam", "--save", "overlay,raw")
    assert len(list(local.glob("*.nii.gz.*.nii.gz"))) == 8


def _node_processes(folder: str) -> list[int]:
    """Process ids of a Ray node started with ``--temp-dir folder``: its own processes (which name
    the folder) and every process under them (the workers its raylet started)."""
    parents, named = {}, set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if folder.encode() in (entry / "cmdline").read_bytes():
                    named.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, grown = set(named), True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grown = bool(children)
    return sorted(found)


@pytest.fixture()
def two_nodes(monkeypatch) -> tuple[str, str]:
    """A Ray cluster of two nodes on this machine, each started by `ray start` with one CPU and a
    temporary folder of its own, the head checking its nodes' health every half second:
    (the head's address, the worker node's folder). Its processes are killed after the test."""
    import tempfile

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # whatever token file this machine's user has
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "500",
           "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}
    ray = str(Path(sys.executable).parent / "ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Short folders: Ray's socket paths under them must stay within the 107 bytes Linux allows.
    head, worker = tempfile.mkdtemp(prefix="xh", dir="/tmp"), tempfile.mkdtemp(prefix="xw", dir="/tmp")
    common = ("--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats")
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={head}",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={worker}", *common], env=env,
                       check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", worker
    finally:
        for folder in (worker, head):
            for pid in _node_processes(folder):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(folder, ignore_errors=True)


def test_a_node_lost_mid_run_has_its_work_redone_on_the_other(two_nodes, many, tiny_model, tmp_path):
    """The worker node of a two-node cluster (its raylet and every process on it) killed while
    both nodes hold a replica: the run finishes on the head with the local engine's outputs,
    every image once, and says that a node was lost and its work redone."""
    address, worker = two_nodes
    images, local = many
    on_ray = tmp_path / "ray"
    run = subprocess.Popen([sys.executable, "-m", "xaicli", "run", str(tiny_model), str(images), "-o", str(on_ray),
                            "-b", "2", "--save", "overlay,raw", "--engine", "ray", "--ray-address", address,
                            "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: _rows(on_ray) >= 16 and set(_replica_processes()) & set(_node_processes(worker)), run)
    for pid in _node_processes(worker):
        os.kill(pid, signal.SIGKILL)
    assert _rows(on_ray) < 300  # killed mid-run
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr  # the one broken image
    _same_outputs(local, on_ray)
    inputs = [line.split(",", 1)[0] for line in _table(on_ray).splitlines()[1:]]
    assert len(inputs) == len(set(inputs)) == 300
    lost = json.loads((on_ray / "run.json").read_text())["ray"]["nodes_lost"]
    assert len(lost) == 1
    assert f"2 nodes; 1 node lost mid-run ({lost[0]}), its work redone on the others" in stderr
