"""One run per output folder: a lock file in OUT that names the run holding it.

The lock is an exclusive ``flock`` on ``OUT/.xai.lock``, so the kernel releases it when the
holder dies however it dies; the file's text (process id, host, start time) is only there to
tell the next run who holds it. A lock file whose ``flock`` can be taken is stale: its run has
ended without removing it (SIGKILL, a power cut), and it is taken over. On a file system
without ``flock`` the holder's process id decides: a process that no longer exists on this host
holds nothing. An output folder on a store is locked by creating ``OUT/.xai.lock`` only if no
object is there (S3: one conditional put, If-None-Match: *), with the same record inside.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from .._errors import UsageError
from .._storage import Store, failure

LOCK_NAME = ".xai.lock"


def describe_holder(holder: dict) -> str:
    """'process 1234 on host gpu-3, started 2026-11-25 14:02:11 UTC'."""
    started = holder.get("started")
    when = time.strftime(", started %Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else ""
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


@contextlib.contextmanager
def output_lock(out_dir: Path, say: Callable[[str], None] = lambda _m: None) -> Iterator[Path]:
    """Hold the lock on ``out_dir`` (created if needed) for the duration of the block.

    Raises ``UsageError`` at once when another live run holds it. ``say`` is told when a stale
    lock is taken over. On leaving the block, however it is left, the lock file is removed, and
    ``out_dir`` too when this run created it and left it empty.
    """
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    path = out_dir / LOCK_NAME
    descriptor = _acquire(path, say)
    try:
        yield path
    finally:
        _release(path, descriptor)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only succeeds when the run wrote nothing


@contextlib.contextmanager
def store_lock(store: Store, say: Callable[[str], None] = lambda _m: None) -> Iterator[str]:
    """``output_lock`` for an output folder on a store: the lock object is created only where
    none is (one conditional request where the store has it; elsewhere a look then a put, which
    ``say`` is told of: two runs started in the same instant could then both go on). A lock
    object of a process that is gone from this host is taken over; another host's is not (its
    run may be alive), and the error says which object to remove. Removed on leaving, if still ours."""
    url = f"{store.url}/{LOCK_NAME}"
    if not store.conditional:
        say(f"{store.url.split('://', 1)[0]}:// has no conditional create here: the lock {url} is taken by a look "
            "and then a put, so two runs started at the same moment could both take it")
    record = _holder_record()
    try:
        taken = store.create(LOCK_NAME, record)
        if not taken:
            data = store.read(LOCK_NAME)  # None: its run removed it since
            earlier = _parsed(data)
            if data is not None and (not earlier or _alive(earlier)):
                holder = describe_holder(earlier) if earlier else "another process"
                raise UsageError(f"{store.url} is in use by another xai run ({holder}); wait for it to end, or write "
                                 f"to another place with -o (remove {url} if that run is gone)")
            if data is not None:
                store.remove(LOCK_NAME)
            if not store.create(LOCK_NAME, record):
                raise UsageError(f"{store.url} is in use by another xai run that started just now; write to another "
                                 "place with -o")
            if earlier:
                say(f"took over the lock of an earlier run that ended without removing it ({describe_holder(earlier)})")
    except UsageError:
        raise
    except Exception as exc:  # the store's own errors: access, network
        raise UsageError(f"cannot take the lock {url}: {failure(exc, store.url)}") from None
    try:
        yield url
    finally:
        try:
            if store.read(LOCK_NAME) == record:
                store.remove(LOCK_NAME)
        except Exception:  # a store that fails now keeps the lock; the next run takes it over
            pass


def _holder_record() -> bytes:
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)})
            + "\n").encode()


def _parsed(data: bytes | None) -> dict:
    try:
        holder = json.loads(data or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _acquire(path: Path, say: Callable[[str], None]) -> int:
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write to output folder {path.parent}: {exc.strerror or exc}") from None
        earlier = _read_holder(descriptor)
        _lock(descriptor, earlier, path)
        if not _same_file(path, descriptor):
            os.close(descriptor)  # the holder removed the file between our open and our lock: try anew
            continue
        if earlier:
            say(f"took over the lock of an earlier run that ended without removing it ({describe_holder(earlier)})")
        _write_holder(descriptor)
        return descriptor


def _lock(descriptor: int, earlier: dict, path: Path) -> None:
    """Take the exclusive lock, or close ``descriptor`` and raise when a live run holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        os.close(descriptor)
        holder = describe_holder(earlier) if earlier else "another process"
        raise UsageError(f"{path.parent} is in use by another xai run ({holder}); wait for it to end, or "
                         "write to another folder with -o") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
    # No flock on this file system: the holder's process id decides.
    if earlier and _alive(earlier):
        os.close(descriptor)
        raise UsageError(f"{path.parent} is in use by another xai run ({describe_holder(earlier)}); wait for it "
                         f"to end, or write to another folder with -o (remove {path} if that run is gone)")


def _alive(holder: dict) -> bool:
    """Whether the holder may still be running: always when it ran on another host."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return holder["pid"] != os.getpid()


def _read_holder(descriptor: int) -> dict:
    """The lock file's record of its holder; {} when it is new, empty or unreadable."""
    try:
        return _parsed(os.pread(descriptor, 4096, 0))
    except OSError:
        return {}


def _write_holder(descriptor: int) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, _holder_record(), 0)


def _same_file(path: Path, descriptor: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _release(path: Path, descriptor: int) -> None:
    # Removed while still locked, so no other run can lock this file and then see it vanish.
    if _same_file(path, descriptor):
        with contextlib.suppress(OSError):
            path.unlink()
    os.close(descriptor)
