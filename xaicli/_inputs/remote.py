"""Images on a store (``s3://bucket/prefix``): listed level by level in the order a local folder
is walked, and each fetched into the run's spool while it is read, removed once it is done."""

from __future__ import annotations

import heapq
import os
import posixpath
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from .._errors import ImageError, UsageError
from .._storage import failure, filesystem
from .discover import DICOM_SUFFIXES, IMAGE_SUFFIXES, InputImage, image_suffix, is_image_name, unique

SPOOL_INPUTS = "inputs"  # the spool's folder that fetched inputs go into, mirroring their relative paths


def discover_remote(urls: Sequence[str], spool: Path | None, exclude: Sequence[str] = (),
                    dicom: bool = False) -> Iterator[InputImage]:
    """``discover`` for URLs: objects with an image suffix (and, when ``dicom``, others whose
    DICOM preamble a ranged read finds) under each URL, relative to the deepest prefix that holds
    every URL, sorted as folders are. Only one level's listing is held at a time. Inputs that are
    not there, or cannot be listed, raise a one-line UsageError at once."""
    if spool is None:
        raise UsageError("inputs on a store need a run's spool folder; give them to xai run or xaicli.run")
    located = [_located(url) for url in urls]
    base = posixpath.commonpath([root if is_folder else posixpath.dirname(root)
                                 for _, _, root, is_folder in located]) if len({fs.protocol for fs, *_ in located}) == 1 else ""
    excluded = {filesystem(url)[1] for url in exclude}
    streams = []
    for (fs, url, root, is_folder) in located:
        scheme = url.split("://", 1)[0]
        names = _walk(fs, root, excluded, dicom) if is_folder else iter([root])
        streams.append(_images(names, scheme, base, spool / SPOOL_INPUTS))
    return unique(heapq.merge(*streams, key=lambda item: item.relative.parts))


def _located(url: str) -> tuple[Any, str, str, bool]:
    """(file system, url, path in it, whether it is a folder); raises when it is not there."""
    fs, root = filesystem(url)
    try:
        info = fs.info(root)
    except FileNotFoundError:
        raise UsageError(f"input not found: {url} (give image objects or prefixes on the store)") from None
    except Exception as exc:  # the store's own errors: credentials, access, network
        raise UsageError(failure(exc, url)) from None
    return fs, url, root.rstrip("/"), info.get("type") == "directory"


def _images(names: Iterator[str], scheme: str, base: str, inputs: Path) -> Iterator[InputImage]:
    for name in names:
        relative = PurePosixPath(posixpath.relpath(name, base) if base else name)
        yield InputImage(inputs / relative, relative, url=f"{scheme}://{name}")


def _walk(fs: Any, folder: str, excluded: set[str], dicom: bool) -> Iterator[str]:
    """Objects under ``folder`` worth reading, depth first, each level's entries in name order."""
    entries = sorted(fs.ls(folder, detail=True), key=lambda entry: posixpath.basename(entry["name"].rstrip("/")))
    for entry in entries:
        name = entry["name"].rstrip("/")
        if name == folder or not posixpath.basename(name):
            continue  # a prefix's own marker object
        if entry.get("type") == "directory":
            if name not in excluded:
                yield from _walk(fs, name, excluded, dicom)
        elif is_image_name(name) or (dicom and _dicom_object(fs, name)):
            yield name


def _dicom_object(fs: Any, name: str) -> bool:
    """A DICOM object without a suffix another reader claims: 'DICM' after its 128-byte preamble."""
    suffix = image_suffix(name)
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES:
        return False
    try:
        return fs.cat_file(name, start=128, end=132) == b"DICM"
    except Exception:  # an object that cannot be read is not one we can explain
        return False


def materialize(item: InputImage) -> None:
    """Fetch a store's object to its place in the spool (``item.path``), whole, unless it is
    there; a one-line ImageError when the store will not give it."""
    if not item.url or item.path.exists():
        return
    fs, path = filesystem(item.url)
    item.path.parent.mkdir(parents=True, exist_ok=True)
    partial = item.path.with_name(f".{item.path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        fs.get_file(path, str(partial))
        os.replace(partial, item.path)
    except FileNotFoundError:
        raise ImageError("the object is no longer on the store (removed during the run)") from None
    except Exception as exc:  # the store's own errors
        raise ImageError(f"cannot fetch it: {failure(exc, item.url)}") from None
    finally:
        partial.unlink(missing_ok=True)


def discard(item: InputImage) -> None:
    """Remove a fetched object's spool copy once its file is done (a volume's last slice)."""
    if item.url and not item.series and (item.part is None or item.part.last):
        item.path.unlink(missing_ok=True)
