"""Embed every ready slide's patches with one encoder, reading pixels while the model computes.

Reading runs in a thread pool (OpenSlide and PIL release the GIL), a few batches ahead of the
encoder, so the model never waits for pixels. Each slide is written on its own by
``store.save_features`` (atomic file, then the ``feature_sets`` row): slides already embedded are
skipped, and an interruption loses at most the slide in progress.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import select

from wsireview.catalog import READY, Catalog, Patch, Slide
from wsireview.features.encoders import DEFAULT_ENCODER, Encoder, get_encoder
from wsireview.features.store import feature_sets, save_features
from wsireview.progress import ProgressCallback
from wsireview.slides.reader import SlideFile
from wsireview.slides.reader import SlideError
from wsireview.status import mark_unreadable
from wsireview.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
PREFETCH_PER_WORKER = 2  # batches read ahead per reading thread

EMBEDDED, EMPTY, FAILED = "embedded", "empty", "failed"


@dataclass
class SlideOutcome:
    slide_id: int
    name: str
    outcome: str  # embedded, empty (no patches: an empty matrix is recorded) or failed
    patches: int = 0
    seconds: float = 0.0
    reason: str | None = None


@dataclass
class EmbedReport:
    encoder: str
    backend: str = ""
    results: list[SlideOutcome] = field(default_factory=list)
    already_done: int = 0  # slides skipped because their features exist
    seconds: float = 0.0  # embedding time, model loading excluded
    load_seconds: float = 0.0

    @property
    def patches(self) -> int:
        return sum(r.patches for r in self.results if r.outcome == EMBEDDED)

    @property
    def patches_per_second(self) -> float:
        return self.patches / self.seconds if self.seconds > 0 else 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failed(self) -> list[SlideOutcome]:
        return [r for r in self.results if r.outcome == FAILED]


def pending_slides(catalog: Catalog, workspace: Workspace, encoder: str,
                   slide_ids: list[int] | None = None) -> tuple[list[Slide], int]:
    """Ready slides without a usable feature set for ``encoder``, and how many already have one.

    A feature set whose file has gone missing counts as not done, so it is embedded again.
    """
    done = {sid for sid, fs in feature_sets(catalog, encoder).items()
            if (path := workspace.absolute(fs.path)) is not None and path.exists()}
    with catalog.session() as session:
        query = select(Slide).where(Slide.status == READY).order_by(Slide.id)
        if slide_ids is not None:
            query = query.where(Slide.id.in_(list(slide_ids)))
        slides = session.scalars(query).all()
        session.expunge_all()
    todo = [s for s in slides if s.id not in done]
    return todo, len(slides) - len(todo)


def patch_grid(catalog: Catalog, slide_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A slide's patch ids and their ``x, y, size`` (level-0 pixels), in id order: the rows of its matrix."""
    with catalog.session() as session:
        rows = session.execute(
            select(Patch.id, Patch.x, Patch.y, Patch.size).where(Patch.slide_id == slide_id).order_by(Patch.id)
        ).all()
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    coords = np.asarray([r[1:] for r in rows], dtype=np.int64).reshape(-1, 3)
    return ids, coords


def _read_batch(slide: SlideFile, coords: np.ndarray, out_px: int) -> np.ndarray:
    return np.stack([slide.read_array(int(x), int(y), int(size), out_px) for x, y, size in coords])


def _embed_one(coords: np.ndarray, slide_file: SlideFile, encoder: Encoder, pool: ThreadPoolExecutor, out_px: int,
               batch_size: int, lookahead: int, on_batch) -> np.ndarray:
    """The slide's feature matrix for ``coords`` (N x 3: level-0 x, y, size); reading runs
    ``lookahead`` batches ahead of the encoder."""
    chunks = [coords[i:i + batch_size] for i in range(0, len(coords), batch_size)]
    pending: deque[Future] = deque()
    features: list[np.ndarray] = []
    submitted = 0
    try:
        while submitted < min(lookahead, len(chunks)):
            pending.append(pool.submit(_read_batch, slide_file, chunks[submitted], out_px))
            submitted += 1
        while pending:
            pixels = pending.popleft().result()
            if submitted < len(chunks):
                pending.append(pool.submit(_read_batch, slide_file, chunks[submitted], out_px))
                submitted += 1
            features.append(encoder.embed(pixels))
            on_batch(len(pixels))
    finally:
        for future in pending:
            future.cancel()
        for future in pending:  # the slide is closed after this returns: let running reads end first
            if not future.cancelled():
                try:
                    future.result()
                except BaseException:
                    pass
    return np.concatenate(features) if features else np.zeros((0, encoder.dim), dtype=np.float32)


def embed_slide_file(path: Path, coords: np.ndarray, encoder: Encoder, pool: ThreadPoolExecutor, out_px: int,
                     batch_size: int, lookahead: int, on_batch: Callable[[int], None]) -> np.ndarray:
    """One slide's feature matrix: the per-slide step of this module and of a cluster worker
    (:mod:`wsireview.features.cluster`). Raises :class:`SlideError` when its pixels cannot be read."""
    with SlideFile(path) as slide_file:
        return _embed_one(coords, slide_file, encoder, pool, out_px, batch_size, lookahead, on_batch)


def embed_slides(
    catalog: Catalog,
    workspace: Workspace,
    encoder: str | Encoder = DEFAULT_ENCODER,
    batch_size: int | None = None,
    workers: int = DEFAULT_WORKERS,
    slide_ids: list[int] | None = None,
    precision: str = "auto",
    runtime: str = "auto",
    threads: int | None = None,
    on_progress: ProgressCallback | None = None,
    device: str = "auto",
) -> EmbedReport:
    """Embed the ready slides that have no features yet for ``encoder``; return what happened.

    ``encoder`` is a name for :func:`get_encoder` or an encoder object. A slide whose pixels cannot
    be read is reported as failed and skipped; the others go on. The model is only loaded when
    there is something to embed. ``on_progress`` hears the slide and the patches done so far.
    ``device`` (auto, cpu, cuda: :func:`wsireview.devices.resolve_device`) is where a named torch
    encoder runs; features come back to the CPU and are stored alike.
    """
    name = encoder if isinstance(encoder, str) else encoder.name
    report = EmbedReport(encoder=name)
    todo, report.already_done = pending_slides(catalog, workspace, name, slide_ids)
    if not todo:
        return report

    def tell(what: str, fraction: float) -> None:
        if on_progress is not None:
            on_progress(what, fraction)

    started = time.perf_counter()
    if isinstance(encoder, str):
        tell(f"loading {encoder}", 0.0)
        encoder = get_encoder(encoder, precision=precision, runtime=runtime, threads=threads, batch_size=batch_size,
                              device=device)
    report.backend = encoder.backend
    report.load_seconds = time.perf_counter() - started
    batch_size = int(batch_size or encoder.batch_size)
    workers = max(1, int(workers))

    jobs = [(slide, *patch_grid(catalog, slide.id)) for slide in todo]
    total = sum(len(ids) for _, ids, _ in jobs)
    started = time.perf_counter()
    overall = [0]

    def advance(n: int, slide_name: str) -> None:
        overall[0] += n
        tell(f"embedding {slide_name} with {name}: {overall[0]:,} of {total:,} patches", overall[0] / max(total, 1))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-patches") as pool:
        for slide, ids, coords in jobs:
            t0 = time.perf_counter()
            out_px = encoder.input_px or slide.patch_size_px or 224
            done = [0]

            def advance_slide(n: int, done: list[int] = done, slide_name: str = slide.name) -> None:
                done[0] += n
                advance(n, slide_name)

            advance_slide(0)
            try:
                slide_path = workspace.absolute(slide.path)
                assert slide_path is not None  # a slide's path column is never empty
                matrix = embed_slide_file(slide_path, coords, encoder, pool, out_px, batch_size,
                                          workers * PREFETCH_PER_WORKER, advance_slide)
            except SlideError as error:
                advance_slide(len(ids) - done[0])  # what this slide would have added
                report.results.append(SlideOutcome(slide.id, slide.name, FAILED, 0, time.perf_counter() - t0, str(error)))
                mark_unreadable(catalog, slide.id, f"unreadable while embedding: {error}")
                log.warning("embedding %s failed: %s", slide.name, error)
                continue
            save_features(catalog, workspace, slide, name, ids, matrix, slide.patch_size_px or out_px)
            outcome = EMBEDDED if len(ids) else EMPTY
            report.results.append(SlideOutcome(slide.id, slide.name, outcome, len(ids), time.perf_counter() - t0))
    tell(f"embedded {len(jobs)} slide{'s' if len(jobs) != 1 else ''} with {name}: {total:,} patches", 1.0)
    report.seconds = time.perf_counter() - started
    return report
