"""Slide readers in worker processes, so a native crash, a hang or a memory blow-up fails one slide.

OpenSlide and libtiff are C code: a damaged file can segfault them, loop forever or make them
allocate without bound. Each job runs in a long-lived worker process (spawned, not forked, so no
state of the parent is shared) with an address-space limit; the parent waits with a deadline,
and replaces a worker that crashed or overran. The job's outcome comes back as a value or a
one-line reason.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import types
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_GB = 2.0
DEFAULT_WORKERS = 2
# A new worker's start-up (a Python process importing its readers) is not counted in a job's time
# limit, up to this long.
STARTUP_S = 60.0


@dataclass(frozen=True)
class ReaderLimits:
    """How slide readers run: in parallel workers, each job within a time and memory limit."""

    workers: int = DEFAULT_WORKERS
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_gb: float = DEFAULT_MEMORY_GB  # address space of each worker process

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 1024**3)


@dataclass(frozen=True)
class JobFailed:
    """A job that raised, crashed, ran out of memory or overran: why, in one line."""

    reason: str


def _limit_memory(memory_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _worker_main(conn: Connection, memory_bytes: int, log_path: str) -> None:
    """Run jobs sent over ``conn`` until told to stop (``None``); send back ``(ok, value)``.

    The worker's stderr goes to ``log_path``: what a C library says as it aborts explains a crash
    (the parent reads it back) and never lands in the user's terminal.
    """
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 2)
    os.close(log)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # one job per process: thread pools only add reserved memory
    warnings.simplefilter("ignore")  # readers' warnings on damaged files: the outcome says what matters
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    _limit_memory(memory_bytes)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        function, args = message  # unpickling imported the function's module
        conn.send((None, None))  # started: the job's function is loaded and running
        os.ftruncate(2, 0)  # the log holds this job's words only
        try:
            outcome = (True, function(*args))
        except MemoryError:
            outcome = (False, f"out of memory: reading it needs more than {memory_bytes / 1024**3:.3g} GB")
        except Exception as error:  # every error becomes a reason; SlideError's text already is one
            from wsireview.slides.reader import SlideError

            text = str(error).strip()
            outcome = (False, text if isinstance(error, SlideError) and text
                       else f"{type(error).__name__}: {text}".rstrip(": "))
        try:
            conn.send(outcome)
        except MemoryError:
            conn.send((False, f"out of memory: its result needs more than {memory_bytes / 1024**3:.3g} GB"))


def crash_reason(exitcode: int | None, limits: ReaderLimits) -> str:
    """The reason for a worker that died in a job: a signal names itself, an abort may be memory."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        hint = (f" (out of memory? the limit is {limits.memory_gb:.3g} GB)"
                if -exitcode in (signal.SIGABRT, signal.SIGKILL, signal.SIGBUS, signal.SIGTRAP) else "")
        return f"the reader crashed: signal {-exitcode} ({name}){hint}"
    return f"the reader crashed: exit code {exitcode}"


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned processes without the parent's main module.

    A spawned child first imports the parent's ``__main__`` (the ``wsireview`` script, a benchmark,
    a test runner): up to the whole app, SQLAlchemy, Rich and the learning code, none of which a
    reader needs. That cost 2-5 s of CPU per worker, which made two isolated workers slower than
    reading in process. With a bare stand-in as ``__main__`` while the process starts, the child
    imports only the reader code its jobs name (job functions must live in importable modules).
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Worker:
    def __init__(self, context, limits: ReaderLimits):
        self.conn, child = context.Pipe()
        handle, self.log_path = tempfile.mkstemp(prefix="wsireview-reader-", suffix=".log")
        os.close(handle)
        self.process = context.Process(target=_worker_main, args=(child, limits.memory_bytes, self.log_path),
                                       daemon=True)
        with _main_module_hidden():
            self.process.start()
        child.close()
        self.job: tuple[Hashable, float] | None = None  # (key, deadline)

    def last_words(self) -> str | None:
        """The last line the worker wrote to stderr (a C library's message as it aborted), if any."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(self.log_path) - 4096))
                lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines()]
        except OSError:
            return None
        lines = [line for line in lines if line]
        return re.sub(r"^\(process:\d+\): ", "", lines[-1])[:300] if lines else None

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                kill = True
        if kill and self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


class ReaderPool:
    """Run ``function(*args)`` jobs in isolated workers; :meth:`results` yields each job's outcome.

    Jobs may be submitted while results are being consumed (a follow-up job for a slide).
    """

    def __init__(self, limits: ReaderLimits = ReaderLimits()):
        self.limits = limits
        self._context = multiprocessing.get_context("spawn")
        self._queue: deque[tuple[Hashable, Callable, tuple]] = deque()
        self._workers: list[_Worker] = []

    def submit(self, key: Hashable, function: Callable, *args) -> None:
        self._queue.append((key, function, args))

    def results(self) -> Iterator[tuple[Hashable, object]]:
        """``(key, value)`` for each job as it finishes, value a :class:`JobFailed` when it did not."""
        while self._queue or any(w.job for w in self._workers):
            self._dispatch()
            busy = [w for w in self._workers if w.job]
            deadline = min(w.job[1] for w in busy if w.job)
            waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            wait(waitables, timeout=max(0.0, deadline - time.monotonic()))
            for worker in busy:
                outcome = self._collect(worker)
                if outcome is not None:
                    yield outcome

    def _dispatch(self) -> None:
        while self._queue:
            idle = next((w for w in self._workers if not w.job), None)
            if idle is None:
                if len(self._workers) >= max(1, self.limits.workers):
                    return
                idle = _Worker(self._context, self.limits)
                self._workers.append(idle)
            key, function, args = self._queue.popleft()
            try:
                idle.conn.send((function, args))
            except (OSError, BrokenPipeError):
                self._replace(idle)
                self._queue.appendleft((key, function, args))
                continue
            idle.job = (key, time.monotonic() + STARTUP_S + self.limits.timeout_s)

    def _collect(self, worker: _Worker) -> tuple[Hashable, object] | None:
        assert worker.job is not None  # called for busy workers only
        key = worker.job[0]
        while worker.conn.poll():
            try:
                ok, value = worker.conn.recv()
            except (EOFError, OSError):
                return key, self._crashed(worker)
            if ok is None:  # started: the job's clock starts now, after the worker's imports
                worker.job = (key, time.monotonic() + self.limits.timeout_s)
                continue
            worker.job = None
            return key, value if ok else JobFailed(value)
        if not worker.process.is_alive():
            return key, self._crashed(worker)
        if time.monotonic() >= worker.job[1]:
            self._replace(worker, kill=True)
            return key, JobFailed(f"timed out after {self.limits.timeout_s:g} s")
        return None

    def _crashed(self, worker: _Worker) -> JobFailed:
        worker.process.join(timeout=5)
        words = worker.last_words()
        self._replace(worker)
        reason = crash_reason(worker.process.exitcode, self.limits)
        return JobFailed(f"{reason}: {words}" if words else reason)

    def _replace(self, worker: _Worker, kill: bool = True) -> None:
        worker.stop(kill=kill)
        self._workers.remove(worker)

    def close(self) -> None:
        for worker in list(self._workers):
            worker.stop()
        self._workers.clear()

    def __enter__(self) -> "ReaderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InlinePool:
    """The same interface, jobs run in this process with no isolation (``--workers 0``: for debugging,
    and the baseline the isolated pool is measured against)."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Hashable, Callable, tuple]] = deque()

    def submit(self, key: Hashable, function: Callable, *args) -> None:
        self._queue.append((key, function, args))

    def results(self) -> Iterator[tuple[Hashable, object]]:
        from wsireview.slides.reader import SlideError

        while self._queue:
            key, function, args = self._queue.popleft()
            try:
                yield key, function(*args)
            except SlideError as error:
                yield key, JobFailed(str(error))
            except Exception as error:
                yield key, JobFailed(f"{type(error).__name__}: {error}")

    def close(self) -> None:
        self._queue.clear()

    def __enter__(self) -> "InlinePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
