"""Engines: the loop around "read, explain, render, write". ``local`` runs it in this process with
threads; ``ray`` runs it in an actor pool of model replicas on Ray Data. Both write the same rows
and files, and the same table and ``run.json`` (but for the engine's name and the timing)."""

from __future__ import annotations

import importlib
import importlib.util
import socket
from typing import TYPE_CHECKING, Iterable, Iterator

from .._errors import UsageError

CONNECT_SECONDS = 5  # how long a cluster's address may take to answer

if TYPE_CHECKING:
    from .._inputs.discover import InputImage
    from .._runs.config import RunConfig
    from .._runs.decisions import Prepared
    from .._runs.record import ImageResult, Record

# The registry of engines: each is the module of that name in this package, with a ``run`` like
# ``local.run``; ``--engine`` and its help read this.
ENGINES = {
    "local": "this machine: threads decode and write while the model explains the batch before",
    "ray": "Ray Data: an actor pool of model replicas on a local Ray or a cluster (the ray extra)",
}


class Watch:
    """What a run tells the person waiting; this one tells no one (the CLI's progress bar and
    notes tell). Calls come from the thread that runs ``xaicli.run`` and iterates the engine's
    results."""

    def loading(self, model: object) -> None:
        """The model is about to be loaded (TensorFlow starts first: seconds with nothing to show)."""

    def note(self, text: str) -> None:
        """A one-line note for whoever watches: the run's choices, where the report went."""

    def begin(self, images: int) -> None:
        """Explaining starts: the run has this many images (a volume counts once until it is read)."""

    def end(self) -> None:
        """Every image is done (the page and the summary may follow)."""

    def stage(self, text: str) -> None:
        """What is under way, e.g. 'compiling gradcam for the first batch'."""

    def advance(self, images: float) -> None:
        """This many images' work is done; fractions while a batch's methods finish one by one."""

    def grow(self, images: int) -> None:
        """The run has this many more images than were counted: a volume's slices, once it is read."""

    def warmed_up(self) -> None:
        """The first batch is done: its tracing and compiling are behind, so rates mean something
        from here on."""


def check_engine(config: RunConfig) -> None:
    """A one-line error, before TensorFlow is imported, when the engine asked for cannot run here:
    Ray missing, or a cluster address nothing answers at."""
    if config.engine != "ray":
        return
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise UsageError("--engine ray needs Ray Data: pip install 'xaicli[ray]' (or pip install 'ray[data]')")
    check_reachable(config.ray_address)


def check_reachable(address: str | None) -> None:
    """A one-line error at once for a cluster address nothing answers at: Ray itself retries for
    minutes before it gives up. 'auto' (and no address) are Ray's to resolve."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit() or not host:
        raise UsageError(f"--ray-address {address}: give 'auto', HOST:PORT (the head's GCS, e.g. :6379) or "
                         "ray://HOST:PORT (Ray Client, e.g. :10001)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise UsageError(f"--engine ray: nothing answers at {address} ({exc.strerror or exc}); start the cluster "
                         "first (ray start --head) or give its address") from None


def run(prepared: Prepared, items: Iterable[InputImage], record: Record, watch: Watch | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` with the run's engine into ``record``; results come in input order (see
    ``local.run``), and ``watch`` is told how the work goes."""
    engine = importlib.import_module(f"{__name__}.{prepared.config.engine}")
    return engine.run(prepared, items, record, watch=watch or Watch())
