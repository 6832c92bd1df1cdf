"""Engines: the loop around "read, explain, render, write". ``local`` runs it in this process with
threads; ``ray`` runs it in an actor pool of model replicas on Ray Data. Both write the same rows
and files, and the same table and ``run.json`` (but for the engine's name and the timing)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from ..errors import UsageError

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..images import InputImage
    from ..pipeline import ImageResult, Prepared


def check_engine(config: RunConfig) -> None:
    """A one-line error, before the model loads, when the engine asked for cannot run here."""
    if config.engine == "ray" and (importlib.util.find_spec("ray") is None
                                   or importlib.util.find_spec("ray.data") is None):
        raise UsageError("--engine ray needs Ray Data: pip install 'xaicli[ray]' (or pip install 'ray[data]')")


def run(prepared: Prepared, items: Iterable[InputImage],
        stop: Callable[[], str | None] = lambda: None) -> Iterator[ImageResult]:
    """Explain ``items`` with the run's engine; results come in input order (see ``local.run``)."""
    if prepared.config.engine == "ray":
        from . import ray
        return ray.run(prepared, items, stop)
    from . import local
    return local.run(prepared, items, stop)
