"""Embed slides as tasks on a Dask distributed cluster: one task per slide, run where a worker is free.

The client (the `embed` or `retrain` process) reads the patch grids from the catalog and sends
each slide as a task: its file path, patch ids and coordinates, and where its feature file goes.
A worker opens the slide on the shared filesystem, embeds it with the same per-slide step as the
single-process path (:func:`wsireview.features.embed.embed_slide_file`) and writes the feature file
atomically (:func:`wsireview.features.store.write_features_file`); only then does the client record
the ``feature_sets`` row. Workers never open the catalog, so SQLite, PostgreSQL or any URL works.

A worker that dies mid-slide loses that slide's task only: the scheduler runs it again on another
worker (up to ``distributed.scheduler.allowed-failures`` deaths, 3 by default, before it gives the
slide up), and an exception in a task is retried ``retries`` times. A killed writer leaves at most a
``*.partial.npy`` file that no row points to, so a half-written matrix never counts as done.

The address is a scheduler's (``tcp://host:8786``) or ``local:N``: a ``LocalCluster`` of N worker
processes on this machine, one task at a time each, the cores shared out between them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sqlalchemy import func, select

from wsireview.catalog import Catalog, Patch, Slide
from wsireview.errors import WsireviewError
from wsireview.features.embed import (
    DEFAULT_WORKERS, EMBEDDED, EMPTY, FAILED, PREFETCH_PER_WORKER, EmbedReport, SlideOutcome, embed_slide_file,
    patch_grid, pending_slides,
)
from wsireview.features.encoders import DEFAULT_ENCODER, Encoder, get_encoder
from wsireview.features.store import encoder_slug, features_path, record_feature_set, write_features_file
from wsireview.progress import ProgressCallback
from wsireview.slides.reader import SlideError
from wsireview.status import mark_unreadable
from wsireview.workspace import Workspace

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 20
TASK_RETRIES = 2  # an exception inside a task (a shared filesystem hiccup, say) is retried this often
TASKS_PER_THREAD = 2  # slides in flight per worker thread: enough to keep workers busy, few grids in memory


class ClusterError(WsireviewError):
    """A cluster address that is malformed or cannot be reached."""


class NotShared(WsireviewError):
    """A worker cannot see a slide or the workspace at the path the client sent: the filesystem is not
    shared (or not mounted at the same place). The slide is reported failed but never marked unreadable."""


# -- what travels to a worker and back ------------------------------------------------------------------

@dataclass(frozen=True)
class EncoderSettings:
    """How a worker builds its encoder (once per worker process, then reused for every slide)."""

    name: str
    precision: str = "auto"
    runtime: str = "auto"
    threads: int | None = None  # compute threads per task; None: the worker's share of its machine's cores
    batch_size: int | None = None
    reading_threads: int = DEFAULT_WORKERS


@dataclass(frozen=True)
class SlideTask:
    """One slide for a worker: everything it needs without the catalog."""

    slide_id: int
    slide_path: str  # absolute: the same path on every machine of the shared filesystem
    patch_ids: np.ndarray
    coords: np.ndarray  # N x 3: level-0 x, y, size
    patch_size_px: int | None
    features_path: str  # absolute: where the worker writes the feature file
    features_root: str  # the workspace's features folder: it must exist on the worker already


@dataclass(frozen=True)
class TaskResult:
    """What a worker sends back: the client turns it into a catalog row and a :class:`SlideOutcome`."""

    slide_id: int
    outcome: str  # embedded, empty or failed (pixels unreadable)
    patches: int
    dim: int
    patch_size_px: int
    seconds: float
    backend: str
    reason: str | None = None


# -- the worker side ------------------------------------------------------------------------------------

_encoders: dict[EncoderSettings, Encoder] = {}
_encoders_lock = threading.Lock()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def compute_threads(settings: EncoderSettings, slots_by_host: dict[str, int]) -> int:
    """Compute threads for one task on this worker: the setting, else this machine's cores divided by
    the task slots (worker processes x threads) the scheduler sees on it, so workers never oversubscribe."""
    if settings.threads:
        return int(settings.threads)
    from distributed import get_worker

    worker = get_worker()
    host = worker.address.rsplit(":", 1)[0].split("://")[-1]
    slots = slots_by_host.get(host) or worker.state.nthreads
    return max(1, usable_cores() // max(1, slots))


def _worker_encoder(settings: EncoderSettings, threads: int) -> Encoder:
    """This worker process's encoder for ``settings``, built on its first slide and kept."""
    key = EncoderSettings(settings.name, settings.precision, settings.runtime, threads, settings.batch_size)
    with _encoders_lock:
        if key not in _encoders:
            _encoders[key] = get_encoder(settings.name, precision=settings.precision, runtime=settings.runtime,
                                         threads=threads, batch_size=settings.batch_size)
            if "torch" in sys.modules:  # eager and compiled torch use the process's thread count
                sys.modules["torch"].set_num_threads(threads)
        return _encoders[key]


def embed_task(task: SlideTask, settings: EncoderSettings, slots_by_host: dict[str, int],
               encoder: Encoder | None = None) -> TaskResult:
    """Runs on a worker: embed one slide and write its feature file; never touches the catalog.

    ``encoder`` is an encoder object sent by the client instead of a name (benchmarks, tests).
    """
    started = time.perf_counter()
    for path, what in ((task.slide_path, "the slide"), (task.features_root, "the workspace's features folder")):
        if not os.path.exists(path):
            raise NotShared(f"{what} {path} is not visible on the worker's machine {socket.gethostname()}: "
                            "workers need the workspace and the slides at the same paths as this machine")
    if encoder is None:
        encoder = _worker_encoder(settings, compute_threads(settings, slots_by_host))
    out_px = encoder.input_px or task.patch_size_px or 224
    patch_size_px = task.patch_size_px or out_px
    batch_size = int(settings.batch_size or encoder.batch_size)
    reading = max(1, settings.reading_threads)
    try:
        with ThreadPoolExecutor(max_workers=reading, thread_name_prefix="read-patches") as pool:
            matrix = embed_slide_file(Path(task.slide_path), task.coords, encoder, pool, out_px, batch_size,
                                      reading * PREFETCH_PER_WORKER, lambda n: None)
    except SlideError as error:
        return TaskResult(task.slide_id, FAILED, 0, encoder.dim, patch_size_px, time.perf_counter() - started,
                          encoder.backend, str(error))
    write_features_file(Path(task.features_path), task.patch_ids, matrix)
    outcome = EMBEDDED if len(task.patch_ids) else EMPTY
    return TaskResult(task.slide_id, outcome, len(task.patch_ids), int(matrix.shape[1]), patch_size_px,
                      time.perf_counter() - started, encoder.backend)


# -- the client side ------------------------------------------------------------------------------------

def local_workers(address: str) -> int | None:
    """N for ``local:N``; None for a scheduler address. Raises :class:`ClusterError` for a bad N."""
    if not address.startswith(LOCAL_PREFIX):
        return None
    count = address[len(LOCAL_PREFIX):]
    if not count.isdigit() or int(count) < 1:
        raise ClusterError(f"bad cluster address {address!r}: local:N needs a number of worker processes, "
                           "e.g. local:2")
    return int(count)


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Undo what starting local workers writes into this process's environment: Dask's nannies set
    ``OMP_NUM_THREADS=1`` (and MKL's, OpenBLAS') here before spawning, which would leave torch in this
    process (a retrain round after its embedding, say) on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in [key for key in os.environ if key not in saved]:
            del os.environ[key]
        os.environ.update({key: value for key, value in saved.items() if os.environ.get(key) != value})


@contextlib.contextmanager
def connect(address: str) -> Iterator[Any]:
    """A Dask client for ``address``: a scheduler (``tcp://host:8786``) or ``local:N``, started here and
    stopped on exit (N worker processes, one task thread each)."""
    from dask.distributed import Client, LocalCluster

    n_local = local_workers(address)
    with contextlib.ExitStack() as stack:
        stack.enter_context(environment_kept())
        try:
            if n_local is not None:
                cluster = stack.enter_context(LocalCluster(
                    n_workers=n_local, threads_per_worker=1, processes=True, dashboard_address=":0",
                ))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(address, timeout=CONNECT_TIMEOUT_S))
        except (OSError, ValueError, TypeError, RuntimeError) as error:
            where = f"start {n_local} local worker processes" if n_local else f"reach the Dask scheduler at {address}"
            raise ClusterError(f"cannot {where}: {error}") from error
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError) as error:
            raise ClusterError(f"the Dask scheduler at {address} has no workers: start some with "
                               f"`dask worker {address}`") from error
        yield client


def slots_by_host(client: Any) -> dict[str, int]:
    """Task slots (threads) per machine of the cluster, from the scheduler's list of workers."""
    slots: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        slots[info["host"]] = slots.get(info["host"], 0) + int(info["nthreads"])
    return slots


def _patch_counts(catalog: Catalog, slide_ids: list[int]) -> dict[int, int]:
    with catalog.session() as session:
        rows = session.execute(select(Patch.slide_id, func.count()).where(Patch.slide_id.in_(slide_ids))
                               .group_by(Patch.slide_id)).all()
    return {slide_id: count for slide_id, count in rows}


def _failure_reason(error: BaseException) -> str:
    from distributed.scheduler import KilledWorker

    if isinstance(error, KilledWorker):
        return "workers kept dying on this slide (it was tried on several); it stays ready for the next run"
    if isinstance(error, WsireviewError):
        return str(error)
    return f"{type(error).__name__}: {error}".splitlines()[0]


def embed_on_cluster(
    catalog: Catalog,
    workspace: Workspace,
    address: str,
    encoder: str | Encoder = DEFAULT_ENCODER,
    batch_size: int | None = None,
    workers: int = DEFAULT_WORKERS,
    slide_ids: list[int] | None = None,
    precision: str = "auto",
    runtime: str = "auto",
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> EmbedReport:
    """Embed the ready slides that have no features yet for ``encoder``, one Dask task per slide.

    The same contract as :func:`wsireview.features.embed.embed_slides` (``workers`` are the reading
    threads of each task, ``threads`` its compute threads); ``on_progress`` hears each slide as it
    completes. ``report.load_seconds`` is the time to start or reach the cluster.
    """
    name = encoder if isinstance(encoder, str) else encoder.name
    report = EmbedReport(encoder=name)
    todo, report.already_done = pending_slides(catalog, workspace, name, slide_ids)
    if not todo:
        return report

    def tell(what: str, fraction: float) -> None:
        if on_progress is not None:
            on_progress(what, fraction)

    from dask.distributed import as_completed

    tell(f"connecting to the cluster {address}", 0.0)
    started = time.perf_counter()
    with connect(address) as client:
        report.load_seconds = time.perf_counter() - started
        settings = EncoderSettings(name, precision, runtime, threads, batch_size, max(1, int(workers)))
        shipped = None if isinstance(encoder, str) else encoder
        slots = slots_by_host(client)
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        counts = _patch_counts(catalog, [s.id for s in todo])
        total = sum(counts.values())
        run = secrets.token_hex(4)
        started = time.perf_counter()
        queue = list(todo)
        running = as_completed()
        slide_of: dict[str, Slide] = {}  # task key -> its slide

        def submit_more() -> None:
            """Keep a few slides per worker thread in flight; grids are read from the catalog as they go."""
            window = max(2, TASKS_PER_THREAD * sum(client.nthreads().values()))
            while queue and running.count() < window:
                slide = queue.pop(0)
                ids, coords = patch_grid(catalog, slide.id)
                slide_path = workspace.absolute(slide.path)
                assert slide_path is not None  # a slide's path column is never empty
                task = SlideTask(slide.id, str(slide_path), ids, coords, slide.patch_size_px,
                                 str(features_path(workspace, slide.id, name)), str(workspace.features))
                key = f"embed-{encoder_slug(name)}-slide-{slide.id}-{run}"
                slide_of[key] = slide
                running.add(client.submit(embed_task, task, settings, slots, shipped, retries=TASK_RETRIES, key=key))

        done_patches = 0
        tell(f"embedding {len(todo)} slides with {name} on {n_workers} workers", 0.0)
        submit_more()
        for future in running:
            slide = slide_of.pop(future.key)
            try:
                result: TaskResult = future.result()
            except Exception as error:  # a worker died too often on it, or a task kept raising
                report.results.append(SlideOutcome(slide.id, slide.name, FAILED, 0, 0.0, _failure_reason(error)))
            else:
                report.backend = report.backend or f"{result.backend}; {n_workers} workers"
                written = features_path(workspace, slide.id, name)
                if result.outcome == FAILED:
                    reason = result.reason or "unreadable"
                    mark_unreadable(catalog, slide.id, f"unreadable while embedding: {reason}")
                elif not written.exists():
                    result = replace(result, outcome=FAILED, reason=f"the worker wrote {written}, which is not on "
                                     "this machine: the workspace must be on a filesystem every worker shares")
                else:
                    record_feature_set(catalog, workspace, slide, name, written, result.dim, result.patches,
                                       result.patch_size_px)
                report.results.append(SlideOutcome(slide.id, slide.name, result.outcome, result.patches,
                                                   result.seconds, result.reason))
            future.release()
            done_patches += counts.get(slide.id, 0)
            tell(f"embedding with {name} on {n_workers} workers: {len(report.results)} of {len(todo)} slides, "
                 f"{done_patches:,} of {total:,} patches", done_patches / max(total, 1))
            submit_more()
        report.seconds = time.perf_counter() - started
    tell(f"embedded {len(todo)} slide{'s' if len(todo) != 1 else ''} with {name} on the cluster: "
         f"{total:,} patches", 1.0)
    return report
