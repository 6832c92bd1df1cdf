"""The Ray engine: Ray Data maps blocks of input files over an actor pool of model replicas.

The driver settles the run's choices once (``pipeline.prepare``) and hands them to every replica
as plain data (``pipeline.Decisions``). A replica loads the model once, then runs the local
engine's loop over each block it is given: it decodes, explains, renders and writes the block's
files itself, and sends back only the rows. The driver writes the table in input order as blocks
come back, and ``run.json`` as the local engine does, so both engines' outputs are the same bytes.

A replica that dies is restarted by Ray and its block is done again (Ray Data's actors restart
and their tasks retry without limit): the block's files are written again, atomically and with
the same bytes, and its rows reach the table once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import re
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .._errors import UsageError
from .._storage import Store, failure
from .._inputs.discover import InputImage
from .._outputs.table import table_text
from .._quiet import stderr_silenced
from .._runs.decisions import Decisions, Prepared, prepare_decided
from .._runs.record import ImageResult, Record
from . import Watch
from .local import Carried, batched, explained

BLOCK_BATCHES = 4  # model batches of files per block a replica takes at a time: fewer pipeline drains
# Files listed and handed to one pool of replicas at a time: the driver holds at most this many
# names (~180 MB of them), and the pool's start (TensorFlow, the model: ~10 s) is paid once per this many.
FILES_PER_DATASET = 500_000
PART_LABEL = re.compile(r"(frame|[xyz])=\d+")  # what follows '#' in the table's name of a volume's slice


def run(prepared: Prepared, items: Iterable[InputImage], record: Record | None = None,
        watch: Watch | None = None) -> Iterator[ImageResult]:
    """Explain ``items`` on Ray (``--ray-address``, or a Ray started here and stopped after), with
    the same results, files, table and ``run.json`` as ``local.run``.

    The results go into ``record`` (by default a new one that never stops); its ``stop`` is asked
    as each block comes back; when it gives a reason (or ``--fail-fast`` has
    met a failure) that block and those under way are dropped: their images have no rows (their
    files may be written), and ``--resume`` explains them again. A node that cannot write the
    output folder stops the run before any image is explained. A node lost mid-run (its
    replicas' blocks are run again on the others by Ray Data) is recorded under
    ``nodes_lost``. ``watch`` is told of each image as its result comes back.
    """
    config = prepared.config
    watch = watch or Watch()
    with _ray_session(config.ray_address):
        if config.store is None:
            check_shared(config.out_dir)
        else:
            check_store_nodes(config.store)
        record = record or Record(prepared)
        with record.opened("ray"):
            started_on = _alive_nodes()
            pool = pool_for(config.workers, config.gpus_per_worker)
            record.engine_details = pool.as_dict()
            carried = _carried_by_file(record.carried)
            watch.stage(f"starting {pool.replicas} model replicas (each loads the model and compiles)")
            try:
                for files in batched(items, FILES_PER_DATASET):
                    for result in _explained_on_ray(prepared, files, carried, pool, record.stopping):
                        record.add(result)
                        _watched(watch, result)
                        yield result
                    if record.status != "complete":
                        return
            finally:
                lost = [f"{address} (node {node[:8]})" for node, address in started_on.items()
                        if node not in _alive_nodes()]
                if lost:
                    record.engine_details["nodes_lost"] = lost


def _alive_nodes() -> dict[str, str]:
    """The cluster's live nodes: node id -> address."""
    return {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}


def _watched(watch: Watch, result: ImageResult) -> None:
    """Tell ``watch`` of one image's result: the driver sees no batch under way, only results."""
    part = result.item.part
    if part is not None and part.position == 0 and part.count > 1:
        watch.grow(part.count - 1)
    watch.advance(1)
    watch.warmed_up()


def _explained_on_ray(prepared: Prepared, files: list[InputImage], carried: dict[str, Carried], pool: Pool,
                      stopping: Callable[[], bool]) -> Iterator[ImageResult]:
    """One dataset of ``files`` through a pool of replicas, results in input order; the blocks
    that come back after ``stopping`` says so are dropped."""
    config = prepared.config
    work = [pickle.dumps((item, carried.get(table_text(item.source), {}))) for item in files]
    blocks = ray.data.from_items([{"work": blob} for blob in work],
                                 override_num_blocks=math.ceil(len(work) / (config.batch_size * BLOCK_BATCHES)))
    replicas = blocks.map_batches(
        _Replica, fn_constructor_kwargs={"decisions": _for_replicas(prepared.decisions), "folder": os.getcwd()},
        batch_size=None, batch_format="numpy", **pool.arguments())
    finished = replicas.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
    try:
        for block in finished:
            if stopping():  # asked as each block comes back, so a finished run is never 'stopped'
                return
            for results in block["results"]:
                yield from pickle.loads(results)
    except ray.exceptions.RayError as exc:
        raise _replica_failure(exc) from None
    finally:
        if hasattr(finished, "close"):
            finished.close()


def _replica_failure(exc: Exception) -> Exception:
    """One line for a replica's failure: a model it could not build (a usage problem: exit 2),
    or an error while explaining, which the per-image error rows did not catch (a bug)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    # The last line names the error; our own errors' class names add nothing to their text.
    reason = re.sub(r"^xaicli\._errors\.\w+: ", "", lines[-1]) if lines else type(exc).__name__
    if isinstance(exc, ray.exceptions.ActorDiedError) and "creation task" in str(exc):
        return UsageError(f"--engine ray: a replica could not prepare the model on its worker: {reason}")
    return RuntimeError(f"a Ray replica failed: {reason}")


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[None]:
    """Ray as asked: the one this process already joined, the cluster at ``address``, or one
    started on this machine for the run (and stopped after it). Ray Data keeps its progress bars
    and its logging to itself: the command line owns standard error."""
    started = not ray.is_initialized()
    if started:
        # The C++ core's one line at start, when told to say nothing after it (the command does so).
        quiet = os.environ.get("RAY_BACKEND_LOG_LEVEL") == "fatal"
        try:
            with stderr_silenced() if quiet else contextlib.nullcontext():
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise UsageError(f"--engine ray: cannot start or join {where}: {str(exc).splitlines()[0]}") from None
    context = ray.data.DataContext.get_current()
    # Ray's failures reach the command as exceptions and are said in one line; its logs (Ray
    # Data's logger has handlers of its own, to the console and to its log file) stay in its files.
    logging.getLogger("ray").setLevel(logging.CRITICAL)
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.CRITICAL)
    context.execution_options.preserve_order = True  # blocks come back in input order
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class Pool:
    """The replicas: how many, the CPUs and GPUs each reserves, and the nodes they may use."""

    replicas: int
    cpus: float
    gpus: float
    nodes: int

    def arguments(self) -> dict[str, object]:
        """``map_batches``'s arguments for this pool."""
        gpus = {"num_gpus": self.gpus} if self.gpus else {}
        return {"compute": ray.data.ActorPoolStrategy(size=self.replicas), "num_cpus": self.cpus, **gpus}

    def as_dict(self) -> dict[str, object]:
        """What ``run.json`` records of the pool."""
        return {"replicas": self.replicas, "cpus_per_replica": self.cpus, "gpus_per_replica": self.gpus,
                "nodes": self.nodes}


def pool_for(workers: int | None, gpus_per_worker: float) -> Pool:
    """The pool on the cluster Ray is connected to.

    By default one replica per node. Together they reserve all but one CPU of the cluster (at
    most half of a one-CPU machine), since Ray Data stalls when actors hold every CPU
    (ray-project/ray#44687). A reservation is Ray's bookkeeping: each replica's TensorFlow still
    uses every core of its node, which is why one replica per node is the default.
    """
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    replicas = workers or max(1, nodes)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    share = max(cpus - 1, cpus / 2) / replicas
    # Ray takes fractions of a CPU only below one.
    share = math.floor(share) if share >= 1 else math.floor(share * 100) / 100
    if share <= 0:
        raise UsageError(f"--workers {replicas} is more replicas than Ray can place on {cpus:g} CPUs "
                         f"(each needs at least 0.01 of a CPU, and one CPU stays free); give fewer")
    return Pool(replicas, share, gpus_per_worker, nodes)


def _for_replicas(decisions: Decisions) -> Decisions:
    """The decisions as a replica follows them: its decode and write threads are its node's to
    count (``--workers`` counts replicas here), and relative paths are read from the driver's
    folder, which the replica enters."""
    return replace(decisions, config=replace(decisions.config, workers=None))


def _carried_by_file(carried: Carried) -> dict[str, Carried]:
    """The resumed run's rows by the file they are of: a volume's slices together."""
    by_file: dict[str, Carried] = {}
    for key, rows in carried.items():
        by_file.setdefault(_file_of(key), {})[key] = rows
    return by_file


def _file_of(key: str) -> str:
    """The file a table's input names: 'scan.nii.gz#z=42' is of 'scan.nii.gz'."""
    path, hash_mark, label = key.rpartition("#")
    return path if hash_mark and PART_LABEL.fullmatch(label) else key


class _Replica:
    """One replica of the model on a Ray worker: loaded once, then given block after block."""

    def __init__(self, decisions: Decisions, folder: str) -> None:
        os.chdir(folder)  # the driver's: relative paths (model, inputs, -o) mean the same here
        self._prepared = prepare_decided(decisions)

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain a block's files and write their outputs; the rows go back pickled, one list of
        results per file (a volume gives one per slice)."""
        work = [pickle.loads(blob) for blob in block["work"]]
        carried: Carried = {key: rows for _, rows in work for key, rows in rows.items()}
        results = list(explained(self._prepared, [item for item, _ in work], carried))
        by_file: dict[Path, list[ImageResult]] = {}
        for result in results:
            by_file.setdefault(result.item.path, []).append(result)
        return {"results": np.array([pickle.dumps(by_file.get(item.path, [])) for item, _ in work], dtype=object)}


def check_shared(out_dir: Path) -> None:
    """Fail before any image is explained when a node of the cluster cannot write the output
    folder the driver sees (on a cluster, OUT must be storage every node mounts at the same path)."""
    token = f".xai-shared-{uuid.uuid4().hex}"
    mark = out_dir / token
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        mark.write_text(token, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") from None
    try:
        where, problem = _first_problem(_sees_remote, lambda node: (str(out_dir), token, os.getcwd()))
    finally:
        for leftover in out_dir.glob(f"{token}*"):
            leftover.unlink(missing_ok=True)
    if problem:
        raise UsageError(f"--engine ray: the workers on {where} cannot write the output folder: {problem}; "
                         "on a cluster, -o must be storage every node mounts at the same path")


def check_store_nodes(store: Store) -> None:
    """Fail before any image is explained when a node of the cluster cannot put an object in the
    output folder on a store, or read the one the driver put there (its credentials or network)."""
    token = f".xai-check-{uuid.uuid4().hex}"
    try:
        if not store.create(token, token.encode()):
            raise UsageError(f"cannot write to {store.url}: {token} is there already")
    except UsageError:
        raise
    except Exception as exc:  # the store's own errors
        raise UsageError(f"cannot write to {store.url}: {failure(exc, store.url)}") from None
    try:
        where, problem = _first_problem(_reaches_remote, lambda node: (store, token, node))
    finally:
        for name in [token, *(f"{token}.{node}" for node in _alive_nodes())]:
            store.remove(name)
    if problem:
        raise UsageError(f"--engine ray: the workers on {where} cannot use {store.url}: {problem}; every node needs "
                         "the store's credentials and endpoint (environment or config files)")


def _first_problem(check: ray.remote_function.RemoteFunction,
                   arguments: Callable[[str], tuple]) -> tuple[str, str]:
    """Run ``check`` once on every live node, with ``arguments(node id)``: ('', '') when every node
    says nothing is wrong, else ('ADDRESS (and N more nodes)', PROBLEM) of the first that does."""
    nodes = _alive_nodes()
    checks = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
              .remote(*arguments(node)) for node in nodes]
    problems = [(address, problem) for address, problem in zip(nodes.values(), ray.get(checks)) if problem]
    if not problems:
        return "", ""
    (address, problem), more = problems[0], len(problems) - 1
    return f"{address}{f' (and {more} more nodes)' if more else ''}", problem


def reaches(store: Store, token: str, node: str) -> str:
    """'' when this process reads the driver's ``token`` object on ``store`` and can put one
    beside it (named by its ``node``); else what is wrong."""
    try:
        if store.read(token) != token.encode():
            return f"{store.url}/{token} is missing or holds something else than the driver wrote"
        store.create(f"{token}.{node}", token.encode())
    except Exception as exc:  # the store's own errors (credentials, access, network), or its package missing
        return failure(exc, store.url) if not isinstance(exc, UsageError) else str(exc)
    return ""


_reaches_remote = ray.remote(num_cpus=0, max_retries=0)(reaches)


def sees(out_dir: str, token: str, folder: str) -> str:
    """'' when this process, in the driver's ``folder``, finds the driver's ``token`` file in
    ``out_dir`` and can write beside it; else what is wrong."""
    try:
        os.chdir(folder)
    except OSError as exc:
        return f"no folder {folder} (the driver's) here: {exc.strerror or exc}"
    mark = Path(out_dir) / token
    try:
        if mark.read_text(encoding="utf-8") != token:
            return f"{mark} holds something else than the driver wrote"
        (Path(out_dir) / f"{token}.{uuid.uuid4().hex}").write_text(token, encoding="utf-8")
    except OSError as exc:
        return f"{exc.strerror or exc} ({exc.filename or out_dir})"
    return ""


_sees_remote = ray.remote(num_cpus=0, max_retries=0)(sees)
