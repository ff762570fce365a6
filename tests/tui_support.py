"""Catalog fixtures for the review app's tests and benchmark: a model version and its review queue
inserted directly (no training), and many slide rows for start-up timing."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from wsireview.catalog import (
    READY,
    Catalog,
    ModelVersion,
    Patch,
    ReviewQueueItem,
    Slide,
    SlidePrediction,
)
from wsireview.catalog.score_files import write_scores
from wsireview.learn.round import RoundResult
from wsireview.learn.spec import RoundSpec

REASONS = ("top-attention", "uncertain", "diverse", "random")


def make_queue(
    catalog: Catalog,
    per_slide: int = 4,
    seed: int = 0,
    parent_id: int | None = None,
    metrics: dict | None = None,
    label_counts: dict | None = None,
) -> int:
    """Insert a ModelVersion with seeded scores for every patch of every ready slide and a queue of
    ``per_slide`` patches per slide, interleaved across slides; returns the model version id."""
    rng = random.Random(seed)
    with catalog.session() as session:
        version = ModelVersion(
            parent_id=parent_id, encoder="stain-stats", positive_label="lesion",
            params={"seed": seed, "budget": per_slide}, status=READY,
            created_at=datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc),
            metrics=metrics if metrics is not None else {"slide_auc": 0.75, "slide_accuracy": 0.7, "instance_auc": 0.68},
            label_counts=label_counts if label_counts is not None else {"slides": {"lesion": 3, "normal": 3}, "patches": {}},
        )
        session.add(version)
        session.flush()
        per_slide_items: list[list[tuple[int, str, float]]] = []
        scores: list[tuple[int, int, float, int, float, float]] = []
        slides = session.scalars(select(Slide).where(Slide.status == READY).order_by(Slide.id)).all()
        for slide in slides:
            patch_ids = session.scalars(select(Patch.id).where(Patch.slide_id == slide.id).order_by(Patch.id)).all()
            if not patch_ids:
                continue
            raw = {pid: rng.random() for pid in patch_ids}
            top = max(raw.values())
            ranked = sorted(patch_ids, key=lambda pid: -raw[pid])
            for rank, pid in enumerate(ranked, start=1):
                prob = rng.random()
                scores.append((pid, slide.id, raw[pid] / top, rank, prob, 1 - abs(prob - 0.5) * 2))
            session.add(SlidePrediction(model_version_id=version.id, slide_id=slide.id, probability=rng.random()))
            chosen = ranked[:per_slide]
            per_slide_items.append([(pid, REASONS[i % len(REASONS)], raw[pid] / top) for i, pid in enumerate(chosen)])
        rank = 1
        for round_ in range(per_slide):
            for items in per_slide_items:
                if round_ < len(items):
                    pid, reason, score = items[round_]
                    session.add(ReviewQueueItem(model_version_id=version.id, patch_id=pid, rank=rank, reason=reason, score=score))
                    rank += 1
        columns = dict(zip(("patch_ids", "slide_ids", "attention", "attention_rank", "probability", "uncertainty"),
                           (np.array(c) for c in zip(*scores)))) if scores else {}
        if columns:
            path = write_scores(catalog.root / "models", version.id, **columns)
            version.scores_path = str(path.relative_to(catalog.root))
        return version.id


def add_slide_rows(catalog: Catalog, n: int, status: str = READY, patches_each: int = 0) -> None:
    """Insert ``n`` slide rows (no files) for start-up timing with a big catalog."""
    with catalog.session() as session:
        start = session.scalar(select(func.count()).select_from(Slide)) or 0
        rows = [
            dict(name=f"bulk-{start + i:05d}.svs", path=f"/nonexistent/bulk-{start + i:05d}.svs", status=status,
                 width=40000, height=30000, level_count=3, mpp_x=0.25, tissue_fraction=0.3, label="normal")
            for i in range(n)
        ]
        session.execute(Slide.__table__.insert(), rows)
        if patches_each:
            ids = session.scalars(select(Slide.id).where(Slide.name.like("bulk-%"))).all()
            session.execute(Patch.__table__.insert(), [
                dict(slide_id=sid, x=224 * k, y=0, size=224, tissue_fraction=1.0) for sid in ids for k in range(patches_each)
            ])


async def settle(pilot) -> None:
    """Let the app's workers finish and their results reach the screen (on triage: the patch)."""
    import asyncio

    from textual.worker import WorkerCancelled

    for _ in range(50):
        await pilot.pause()
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:  # an exclusive worker (read-ahead) was replaced by a newer one
            continue
        await pilot.pause()
        screen = pilot.app.screen
        current = getattr(screen, "current", None)
        if current is None or screen.query_one("#patch").shown_key is not None or current.patch_id in screen._errors:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the patch never appeared")


def fake_round(catalog: Catalog, parent_id: int, seed: int) -> RoundResult:
    """What a stand-in for ``retrain`` returns in app tests: a new version with one queued patch
    per slide, described as the real round describes it (the round itself is tested with the
    learning code)."""
    new = make_queue(catalog, per_slide=1, seed=seed, parent_id=parent_id)
    with catalog.session() as session:
        version, parent = session.get(ModelVersion, new), session.get(ModelVersion, parent_id)
        reasons = dict(session.execute(
            select(ReviewQueueItem.reason, func.count()).where(ReviewQueueItem.model_version_id == new)
            .group_by(ReviewQueueItem.reason)
        ).all())
        return RoundResult(
            model_version_id=new, parent_id=parent_id, spec=RoundSpec(encoder=version.encoder, seed=seed),
            metrics=dict(version.metrics), previous_metrics=dict(parent.metrics) if parent else None,
            label_counts=dict(version.label_counts), queued=sum(reasons.values()), queue_reasons=reasons,
            checkpoint=Path(f"model-{new}.pt"),  # never written: the app does not load it
        )


async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Pause until ``condition()`` holds, checking every 50 ms: a wait on what the test needs, not a
    fixed delay that is too long on a fast machine and too short on a busy one."""
    import asyncio

    from textual.css.query import NoMatches

    def holds() -> bool:
        try:
            return bool(condition())
        except NoMatches:  # the widget it reads is not mounted yet
            return False

    deadline = asyncio.get_running_loop().time() + timeout
    while not holds():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        await pilot.pause(0.05)


def palette_found(app, query: str) -> bool:
    """The command palette has finished searching and lists a command that matches ``query``."""
    from textual.command import CommandList, CommandPalette

    screen = app.screen
    if not isinstance(screen, CommandPalette):
        return False
    if any(w.group == CommandPalette._GATHER_COMMANDS_GROUP and not w.is_finished for w in app.workers):
        return False
    return any(query.lower() in option.prompt.plain.lower() for option in screen.query_one(CommandList).options)
