"""Finding the images of a run: files and folders walked in sorted order, paths from standard
input, and what each found image is (a file, or a part of a volume)."""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

from .._errors import UsageError
from .._storage import as_location
from .dicom import has_dicom_preamble
from .nifti import NIFTI_SUFFIXES, is_nifti_name

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
PICTURE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
IMAGE_SUFFIXES = frozenset({*PICTURE_SUFFIXES, *DICOM_SUFFIXES, *NIFTI_SUFFIXES})


@dataclass(frozen=True)
class Part:
    """Where one image sits in a file that holds several (a multi-frame DICOM, a NIfTI volume).

    ``axis``: 'frame' (DICOM frames, counted from 1) or 'z', 'y', 'x' (NIfTI slices: the voxel
    index along that axis in RAS order, from 0). ``position``: this part's place among the
    ``count`` parts explained from the file. ``digits``: width of the number in file names.
    """

    axis: str
    index: int
    position: int
    count: int
    digits: int = 3

    @property
    def label(self) -> str:
        """'frame=3' or 'z=42', as the table's input column shows it after '#'."""
        return f"{self.axis}={self.index}"

    @property
    def name_suffix(self) -> str:
        """'f003' or 'z042', added to the file's name in output names."""
        return f"{'f' if self.axis == 'frame' else self.axis}{self.index:0{self.digits}d}"

    @property
    def last(self) -> bool:
        return self.position == self.count - 1


@dataclass(frozen=True)
class InputImage:
    """One image to explain: where it is, and where it sits in the mirrored output tree.

    ``part``: which frame or slice, for files that hold several images. ``error``: why a file
    could not be split into its images (its row says so). ``series``: for a DICOM series read as
    one volume, its SeriesInstanceUID and files; ``path`` is then their folder and ``relative``
    the folder's, named by the UID. ``url``: an object on a store ('s3://bucket/a.png'), fetched
    to ``path`` (in the run's spool) while it is read.
    """

    path: Path
    relative: PurePosixPath
    part: Part | None = None
    error: str = ""
    series: tuple[str, tuple[Path, ...]] | None = None
    url: str = ""

    @property
    def source(self) -> str:
        """The file as the table names it: its URL on a store, else its path."""
        return self.url or str(self.path)

    @property
    def name(self) -> str:
        """The input as the table names it: the file (``source``), with '#frame=3' or '#z=42' for
        a part, '#series=UID' for a DICOM series."""
        if self.series:
            return f"{self.path}#series={self.series[0]}"
        return f"{self.source}#{self.part.label}" if self.part else self.source

    @property
    def output_relative(self) -> PurePosixPath:
        """``relative``, with the part's number added to the name ('scan.dcm.f003')."""
        return self.relative.with_name(f"{self.relative.name}.{self.part.name_suffix}") if self.part else self.relative


def image_suffix(name: str) -> str:
    """The suffix that says how a file is read, in lower case ('.nii.gz' counts as one)."""
    return ".nii.gz" if is_nifti_name(name) else os.path.splitext(name)[1].lower()


def is_image_name(name: str) -> bool:
    """True when the file name ends with a supported image suffix (any letter case)."""
    return image_suffix(name) in IMAGE_SUFFIXES


def is_dicom(path: Path) -> bool:
    """A DICOM file: named .dcm/.dicom, or with a name no other reader claims and the DICOM
    preamble inside (scanners often write files named by UIDs, without a suffix)."""
    suffix = image_suffix(path.name)
    return suffix in DICOM_SUFFIXES or (suffix not in IMAGE_SUFFIXES and has_dicom_preamble(path))


def expand_stdin(inputs: Sequence[Path | str], lines: Iterable[str]) -> list[Path | str]:
    """Replace an input '-' by the paths or store URLs in ``lines`` (standard input), one per
    line; blank lines are skipped."""
    if not any(os.fspath(entry) == "-" for entry in inputs):
        return list(inputs)
    listed = [as_location(line.rstrip("\r\n")) for line in lines if line.strip()]
    return [path for entry in inputs for path in (listed if os.fspath(entry) == "-" else [entry])]


def discover(inputs: Sequence[Path | str], exclude: Iterable[Path | str] = (), dicom: bool = False,
             spool: Path | None = None) -> Iterator[InputImage]:
    """Stream the images named by ``inputs``: files as given, folders searched recursively (for
    files with an image suffix and, when ``dicom``, any other file whose DICOM preamble is found).
    Inputs may instead all be URLs of a store (``remote.discover_remote``: fetched into ``spool``).

    Relative paths are taken from the deepest folder that holds every input, so a single
    folder mirrors its own tree and several inputs never collide. Folders in ``exclude``
    (e.g. the output folder inside the input tree) are not entered. Symlinked folders are not
    followed, so link loops cannot trap the walk. Only one folder's listing is held at a time,
    so memory does not grow with the number of images.

    Returns:
        An iterator of images in sorted order of their relative paths' components (a folder's
        files and subfolders by name), each once. Missing inputs raise at once.
    """
    urls = [entry for entry in inputs if isinstance(entry, str)]
    if urls:
        if len(urls) != len(inputs):
            raise UsageError("give inputs either as local paths or as URLs of a store, not both in one run")
        from .remote import discover_remote

        return discover_remote(urls, spool, [entry for entry in exclude if isinstance(entry, str)], dicom)
    exclude = [entry for entry in exclude if not isinstance(entry, str)]
    missing = [str(p) for p in inputs if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"input not found: {missing[0]} (give image files or folders)")
    base = Path(os.path.commonpath([_absolute(p) if p.is_dir() else _absolute(p).parent for p in inputs]))
    excluded = {p.resolve() for p in exclude}
    def located(path: Path) -> InputImage:
        return InputImage(path, PurePosixPath(_absolute(path).relative_to(base).as_posix()))

    wanted = (lambda path: is_image_name(path.name) or is_dicom(path)) if dicom else (lambda path: is_image_name(path.name))
    streams = [map(located, _walk_sorted(root, excluded, wanted) if root.is_dir() else [root]) for root in inputs]
    return unique(heapq.merge(*streams, key=lambda item: item.relative.parts))


def unique(items: Iterable[InputImage]) -> Iterator[InputImage]:
    """Drop repeats of a relative path; ``items`` are sorted, so repeats are neighbours."""
    previous = None
    for item in items:
        if item.relative != previous:
            yield item
        previous = item.relative


def _absolute(path: Path) -> Path:
    """Absolute and with '..' folded, without resolving symlinks (they name the tree we mirror)."""
    return Path(os.path.abspath(path))


def _walk_sorted(folder: Path, excluded: set[Path], wanted: Callable[[Path], bool]) -> Iterator[Path]:
    """Files under ``folder`` that are ``wanted``, depth first, each folder's entries in name order."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return  # an unreadable folder holds nothing we can explain
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if Path(entry.path).resolve() not in excluded:
                yield from _walk_sorted(Path(entry.path), excluded, wanted)
        elif wanted(Path(entry.path)):
            yield Path(entry.path)
