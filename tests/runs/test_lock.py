"""lock.py: one run per output folder. The lock itself needs no TensorFlow."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

import pytest
from click.testing import CliRunner

from xaicli._errors import UsageError
from xaicli._runs.lock import LOCK_NAME, output_lock


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _write_lock(folder, pid: int, host: str | None = None) -> None:
    folder.mkdir(exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": 1764079200.0}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def test_lock_names_its_holder_and_refuses_a_second_run(tmp_path):
    out = tmp_path / "out"
    with output_lock(out) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UsageError, match=rf"{out} is in use by another xai run \(process {os.getpid()} on host "
                                             rf"{socket.gethostname()}, started .* UTC\); wait for it to end"):
            with output_lock(out):
                pass
        assert path.exists()  # the refused run leaves the holder's lock alone
    assert not path.exists() and not out.exists()  # created by this run and left empty: removed


def test_lock_is_removed_when_the_block_raises_and_the_folder_kept_when_it_has_files(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_lock(out):
            (out / "predictions.csv").write_text("input\n")
            raise RuntimeError("the run failed")
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]


def test_stale_lock_of_a_dead_process_is_taken_over_and_said(tmp_path):
    out = tmp_path / "out"
    pid = _dead_pid()
    _write_lock(out, pid)
    said = []
    with output_lock(out, said.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert len(said) == 1 and "took over the lock of an earlier run" in said[0] and f"process {pid} on" in said[0]
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("holder,refused", [("parent", True), ("dead", False), ("other host", True)])
def test_without_flock_the_process_id_decides(tmp_path, monkeypatch, holder, refused):
    """On a file system without flock (some network mounts), a lock stands while its process
    lives on this host, and always when it was taken on another host."""
    def no_flock(*_args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("xaicli._runs.lock.fcntl.flock", no_flock)
    out = tmp_path / "out"
    pid = {"parent": os.getppid(), "dead": _dead_pid(), "other host": 1}[holder]
    _write_lock(out, pid, "elsewhere.example" if holder == "other host" else None)
    if refused:
        with pytest.raises(UsageError, match=f"in use by another xai run \\(process {pid} on host"):
            with output_lock(out):
                pass
    else:
        with output_lock(out) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_second_run_is_refused_before_the_model_is_read(tmp_path):
    """The lock is checked first, so the refusal comes at once (here the model does not even exist)."""
    from xaicli.cli import main

    out = tmp_path / "out"
    (tmp_path / "a.png").write_bytes(b"")
    with output_lock(out):
        result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.keras"), str(tmp_path / "a.png"),
                                           "-o", str(out)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"xai: error: {out} is in use by another xai run (process {os.getpid()} on host")


def test_lock_is_gone_after_a_normal_end_and_an_error_exit(tiny_model, image_folder, tmp_path):
    from xaicli.cli import main

    out = tmp_path / "out"
    done = CliRunner().invoke(main, ["run", str(tiny_model), str(image_folder), "-o", str(out), "-q"])
    assert done.exit_code == 1 and not (out / LOCK_NAME).exists()  # 1: the folder's broken image
    failed = CliRunner().invoke(main, ["run", str(tiny_model), str(image_folder), "-o", str(out), "--overwrite",
                                         "--layer", "nope"])
    assert failed.exit_code == 2 and "layer 'nope' not found" in failed.stderr
    assert not (out / LOCK_NAME).exists()
