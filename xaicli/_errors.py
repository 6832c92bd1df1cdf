"""Errors that carry a message a person can act on.

Library code raises these; only the command line (``xaicli.cli``) prints them and chooses the exit code.
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_REQUIREMENT_UNMET = 3  # --require: every output written, but a figure missed its bound
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, reported in one line (the traceback with --debug)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: standard output's reader went away (`| head`), a pipeline's normal end


class XaiError(Exception):
    """Base class: ``str(error)`` is one line that says what went wrong and what to do."""

    exit_code = EXIT_USAGE


class UsageError(XaiError):
    """A bad option value or combination of options."""


class InterruptedRunError(UsageError):
    """OUT holds a run that did not finish (its ``run.json`` says running or stopped)."""

    def __init__(self, out_dir: object, status: str) -> None:
        self.out_dir, self.status = out_dir, status
        super().__init__(self.advice("--resume"))

    def advice(self, resume: str) -> str:
        """The message, with ``resume`` as the way to continue (the flag, or a whole command)."""
        return (f"{self.out_dir} holds an interrupted run ({self.status}); continue it with {resume}, "
                "or start again with --overwrite")


class ModelError(XaiError):
    """The model file cannot be loaded or cannot be explained as asked."""


class LayerError(ModelError):
    """The requested target layer does not exist or has the wrong kind of output."""


class ImageError(XaiError):
    """One input image cannot be used; becomes an error row, never stops the run."""

    @staticmethod
    def unreadable(exc: OSError) -> "ImageError":
        """The row's reason for a file that vanished or may not be read (any reader's)."""
        if isinstance(exc, FileNotFoundError):
            return ImageError("file not found (a broken link or removed during the run)")
        return ImageError("permission denied: the file is not readable")


# What stops a run as a signal does (its outputs cannot be written, not one image's fault): a write's
# errno -> what the output folder has become.
STORAGE_FAILURES = {errno.ENOSPC: "disk full", errno.EDQUOT: "quota exceeded", errno.EROFS: "read-only",
                    errno.EACCES: "not writable", errno.EPERM: "not writable"}


class StoreWriteError(OSError):
    """A put that an object store refused after its own retries (``strerror`` says why, in one
    line; ``filename`` is the object's URL); it stops the run as a full disk does."""


def storage_failure(exc: BaseException | None) -> str | None:
    """'disk full at PATH' (or quota exceeded, read-only, not writable; 'the store refused a
    write: WHY' for an object store) when ``exc`` is a write's OSError that no retry of one image
    can get past; None for anything else."""
    if isinstance(exc, StoreWriteError):
        return f"the store refused a write: {exc.strerror}"
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_FAILURES:
        return None
    return f"{STORAGE_FAILURES[exc.errno]} at {exc.filename}" if exc.filename else STORAGE_FAILURES[exc.errno]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
