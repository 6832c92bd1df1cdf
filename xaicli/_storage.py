"""Object storage (S3, GCS, Azure, any fsspec file system) as a run's inputs and output folder.

A location is a local path or a URL (``s3://bucket/prefix``); ``file://`` URLs are local paths.
Credentials and endpoints are each file system's own (environment, config files, instance
roles); nothing of them is kept. A run writes OUT's files into a local spool folder and puts each
finished file whole in one request, so no partial object is ever seen under its final name.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ._errors import StoreWriteError, UsageError

URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# URL scheme -> (the package that reads it, the xaicli extra that installs it)
STORE_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
                  "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure")}
# Where a store's conditional create (the lock) is known to exist: S3's If-None-Match: * (s3fs
# pipe_file mode='create'); other file systems are written after a look.
CONDITIONAL_CREATE = frozenset({"s3", "s3a"})


def is_url(location: str | os.PathLike) -> bool:
    """True for 'scheme://...' other than file:// (a local path written as a URL)."""
    text = os.fspath(location)
    return bool(URL.match(text)) and not text.lower().startswith("file://")


def as_location(text: str | os.PathLike) -> Path | str:
    """A command line's input or output: a URL of a store kept as text, anything else (file://
    URLs included) a local path."""
    text = os.fspath(text)
    if text.lower().startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    return text.rstrip("/") if is_url(text) else Path(text)


def filesystem(url: str) -> tuple[Any, str]:
    """(the fsspec file system of ``url``, the path in it: 'bucket/prefix'); a one-line
    UsageError naming the extra to install when its package is missing."""
    scheme = url.split("://", 1)[0].lower()
    package, extra = STORE_PACKAGES.get(scheme, ("fsspec", "s3"))
    if importlib.util.find_spec("fsspec") is None or importlib.util.find_spec(package) is None:
        how = f"pip install 'xaicli[{extra}]'" if scheme in STORE_PACKAGES else "pip install fsspec (and its package for it)"
        raise UsageError(f"{url}: {scheme}:// needs {package}: {how}")
    import fsspec

    try:
        # No listings cache: a run lists what other processes (replicas, an earlier run) wrote.
        return fsspec.core.url_to_fs(url, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{url}: {exc}") from None


def failure(exc: BaseException, url: str) -> str:
    """What went wrong with a store, in one line that says what to do."""
    kind = type(exc).__name__
    if kind in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
        return (f"no credentials for {url} ({exc}); set them as the store's tools do (for S3: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)")
    if isinstance(exc, PermissionError):
        return f"access to {url} denied ({exc}); check the credentials and that they may read and write there"
    return f"{url}: {getattr(exc, 'strerror', None) or exc}"


@dataclass(frozen=True)
class Store:
    """An output folder on object storage: ``url`` ('s3://bucket/prefix', no trailing '/') and
    ``spool``, the local folder whose files are put there (a file's key is its path under the
    spool). Plain data: it crosses to Ray's replicas, which open the file system themselves."""

    url: str
    spool: Path

    def url_of(self, path: Path) -> str:
        """The object a spool file becomes: ``url`` + its path under ``spool``."""
        return f"{self.url}/{path.relative_to(self.spool).as_posix()}"

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is a file of the spool (put to the store), not one elsewhere (--predictions)."""
        return path.is_relative_to(self.spool)

    def put(self, path: Path, keep: bool = False) -> None:
        """Put the spool file ``path`` whole in one request (multipart only past 100 MB, which the
        store also shows only once complete), then remove it unless ``keep``. Raises
        StoreWriteError, named by the object, when the store refuses."""
        fs, _ = filesystem(self.url)
        target = self.url_of(path)
        try:
            fs.put_file(str(path), target)
        except Exception as exc:  # any store's errors: each fsspec package raises its own
            raise StoreWriteError(errno.EACCES if isinstance(exc, PermissionError) else errno.EIO,
                                  failure(exc, target), target) from None
        if not keep:
            path.unlink(missing_ok=True)

    def listing(self, under: str = "") -> frozenset[PurePosixPath]:
        """Every object under ``url`` (or its folder ``under``), as paths relative to ``url``: one
        recursive listing (S3: a LIST request per 1,000 objects)."""
        fs, root = filesystem(self.url)
        base = f"{root}/{under}".rstrip("/")
        try:
            found = fs.find(base)
        except FileNotFoundError:
            return frozenset()
        return frozenset(PurePosixPath(name).relative_to(root) for name in found)

    def fetch(self, path: Path) -> bool:
        """Copy the object that the spool file ``path`` stands for to it; False when there is none,
        or when ``path`` is not the spool's (``--predictions`` elsewhere)."""
        if not self.holds(path):
            return False
        fs, root = filesystem(self.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(f"{root}/{path.relative_to(self.spool).as_posix()}", str(path))
        except FileNotFoundError:
            return False
        return True

    def fetch_missing(self, under: str) -> int:
        """Copy every object under the folder ``under`` that the spool lacks into it, many
        requests at a time; returns how many were fetched."""
        fs, root = filesystem(self.url)
        missing = [relative for relative in self.listing(under) if not (self.spool / relative).exists()]
        for relative in missing:
            (self.spool / relative).parent.mkdir(parents=True, exist_ok=True)
        if missing:  # one call: asynchronous stores (S3, GCS, Azure) run the requests concurrently
            fs.get([f"{root}/{relative}" for relative in missing], [str(self.spool / relative) for relative in missing])
        return len(missing)

    def create(self, relative: str, data: bytes) -> bool:
        """Write ``data`` at ``relative`` unless an object is there; True when written. On S3 one
        conditional request (If-None-Match: *) decides; elsewhere a look, then a put."""
        fs, root = filesystem(self.url)
        key = f"{root}/{relative}"
        if self.conditional:
            try:
                fs.pipe_file(key, data, mode="create")
            except FileExistsError:
                return False
            return True
        if fs.exists(key):
            return False
        fs.pipe_file(key, data)
        return True

    def read(self, relative: str) -> bytes | None:
        """The object at ``relative``, or None when there is none."""
        fs, root = filesystem(self.url)
        try:
            return fs.cat_file(f"{root}/{relative}")
        except FileNotFoundError:
            return None

    def remove(self, relative: str) -> None:
        fs, root = filesystem(self.url)
        try:
            fs.rm_file(f"{root}/{relative}")
        except FileNotFoundError:
            pass

    @property
    def conditional(self) -> bool:
        """Whether the store has a conditional create (the lock is then exclusive)."""
        return self.url.split("://", 1)[0].lower() in CONDITIONAL_CREATE


def check_store(url: str) -> None:
    """A one-line UsageError before any work when ``url`` cannot be listed: no bucket, no
    credentials, access denied, the extra missing."""
    fs, root = filesystem(url)
    bucket = root.split("/", 1)[0]
    try:
        there = fs.isdir(bucket)
    except Exception as exc:  # the store's own errors (credentials, access, network)
        raise UsageError(failure(exc, url)) from None
    if not there:
        raise UsageError(f"{url}: the bucket {bucket} does not exist; create it first or check its name")
