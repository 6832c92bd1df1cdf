"""What the person at the terminal sees and does: the progress bar and notes on stderr, signals
that stop a run, a standard output whose reader may go away, errors as one line and an exit
code, and TensorFlow's start-up quieted."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import traceback
import warnings
from typing import IO, Callable, Iterator

import click

from .._engines import Watch
from .._errors import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, XaiError, first_line
from .._quiet import stderr_silenced


@contextlib.contextmanager
def table_on_stdout(used: bool, closed: Callable[[], None]) -> Iterator[None]:
    """While the table goes to standard output (``used``), file names that are not valid UTF-8
    are written as backslash escapes, as in a table file, and a reader that goes away (``| head``)
    calls ``closed`` instead of raising: the run stops as on a signal."""
    if not used:
        yield
        return
    original = sys.stdout
    reconfigure = getattr(original, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="backslashreplace")
    sys.stdout = ReaderMayLeave(original, closed)
    try:
        yield
    finally:
        sys.stdout = original


class ReaderMayLeave:
    """Standard output whose reader may go away: the first write that finds the pipe closed calls
    ``closed`` once; that write and every later one go nowhere. Anything else is the stream's."""

    def __init__(self, stream: IO[str], closed: Callable[[], None]) -> None:
        self._stream = stream
        self._closed = closed
        self._gone = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        self._guarded(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, action: Callable[[], object]) -> None:
        if self._gone:
            return
        try:
            action()
        except BrokenPipeError:
            self._gone = True
            stdout_to_devnull()
            self._closed()


def stdout_to_devnull() -> None:
    """Point the process's standard output at /dev/null, so that what is still buffered for the
    closed pipe goes nowhere at exit instead of raising again."""
    try:
        descriptor = sys.__stdout__.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a real file (a test runner's)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the batches under
    way; a second signal stops at once. Calling the object gives the signal's name, or None."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.reason: str | None = None
        self._say = say
        self._previous: dict[int, object] = {}

    def __call__(self) -> str | None:
        if self.reason == "SIGPIPE":
            return "SIGPIPE (standard output's reader went away)"
        return self.reason

    def stdout_closed(self) -> None:
        """The reader of standard output went away: the run stops as on SIGPIPE, quietly."""
        self.reason = self.reason or "SIGPIPE"

    def _handle(self, signum: int, _frame: object) -> None:
        if self.reason:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self._say(f"{self.reason} received: finishing the batches under way (send it again to stop at once)")

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Watched(Watch):
    """What the person at the terminal sees of a run: one-line notes on stderr, and a tqdm bar that
    moves as each batch's methods finish, says what is under way (compiling for the first batch,
    then the method), and estimates the time left from the batches after the first, whose
    tracing and compiling would inflate it. ``--quiet`` shows neither."""

    BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"

    def __init__(self, quiet: bool, debug: bool, telling: Callable[[], bool] = lambda: True) -> None:
        self._quiet = quiet
        self._debug = debug
        self._telling = telling  # notes are said only while this holds
        self._bar = None
        self._warm = False

    def loading(self, model: object) -> None:
        if sys.stderr.isatty():  # someone is watching: say why nothing moves for a few seconds
            self.note(f"loading {model} (TensorFlow takes a few seconds to start)")
        quiet_tensorflow(self._debug)

    def note(self, text: str) -> None:
        if not self._quiet and self._telling():
            click.echo(f"xai: {text}", err=True)

    def begin(self, images: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=images, unit="img", file=sys.stderr, disable=self._quiet, dynamic_ncols=True,
                         bar_format=self.BAR_FORMAT)

    def end(self) -> None:
        """The bar's last line stays, telling the count, not a stage long past."""
        if self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)
            self._bar.close()
            self._bar = None

    def stage(self, text: str) -> None:
        self._bar.set_postfix_str(text)

    def advance(self, images: float) -> None:
        self._bar.update(images)

    def grow(self, images: int) -> None:
        self._bar.total += images
        self._bar.refresh()

    def warmed_up(self) -> None:
        if self._warm:
            return
        self._warm = True
        done = self._bar.n
        self._bar.set_postfix_str("", refresh=False)  # compiling is over
        self._bar.reset()  # the rate and estimate start again, from the work done so far
        self._bar.n = self._bar.initial = self._bar.last_print_n = done
        self._bar.refresh()


@contextlib.contextmanager
def errors_reported(debug: bool) -> Iterator[None]:
    """Turn a project error into one line on stderr and exit status 2. A closed standard output
    is a pipeline's normal end: exit 141 (SIGPIPE's), quietly. Anything else is a bug: one line
    too (exit 70), and the traceback only with --debug."""
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore")
            yield
    except XaiError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"xai: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("xai: stopped at once; images of the batches under way have no rows (--resume redoes them)",
                   err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # `xai info --json | head -c 10`: the reader has what it wanted
        stdout_to_devnull()
        sys.exit(EXIT_BROKEN_PIPE)
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 (the last line of defence: a bug, never a traceback)
        if debug:
            raise
        click.echo(f"xai: internal error: {type(exc).__name__}: {first_line(exc)} (a bug in xai, or a model it "
                   "does not understand yet; run again with --debug for the traceback and report it)", err=True)
        sys.exit(EXIT_INTERNAL)


def quiet_tensorflow(debug: bool) -> None:
    """TensorFlow imported with its start-up lines silenced (all of them with --debug), before a model is read."""
    if debug:  # what the library notes for the curious, e.g. options dropped from a newer Keras's file
        logging.basicConfig(format="xai: debug: %(message)s")
        logging.getLogger("xaicli").setLevel(logging.DEBUG)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # Ray's C++ core (--engine ray) says at start that it read this, and nothing after.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        with stderr_silenced():
            import tensorflow  # noqa: F401  (its C++ start-up lines go to the silenced stderr)
        # TensorFlow and Keras 2 also log notices through Python logging, and pydicom logs each
        # decoder that failed before another took the file (or the row said why); the CLI owns stderr.
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
