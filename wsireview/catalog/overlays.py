"""What a viewer draws over one slide, in level-0 pixels: the patch grid, the model's attention,
the review queue and the verdicts.

Plain dataclasses out (no ORM objects), one short session per call, like ``queries``: the web
viewer and any other front end read the same rows the terminal app reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from wsireview.catalog.db import Catalog
from wsireview.catalog.models import Patch, Review, ReviewQueueItem
from wsireview.catalog.queries import latest_model_version_id
from wsireview.catalog.score_files import version_scores
from wsireview.catalog.verdicts import counting, open_patches


@dataclass(frozen=True)
class PatchVerdict:
    """One reviewer's latest verdict on a patch that counts (not undone)."""

    patch_id: int
    verdict: str
    reviewer: str
    review_id: int


@dataclass
class SlideOverlays:
    """Columns aligned by patch: ``x[i], y[i], size[i]`` is patch ``patch_ids[i]`` (top-left, level 0)."""

    model_version_id: int | None
    patch_ids: list[int] = field(default_factory=list)
    x: list[int] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    attention: list[float | None] = field(default_factory=list)  # 0..1 within the slide; None: not scored
    queued: list[int] = field(default_factory=list)  # patch ids of the model's queue, in rank order
    verdicts: list[PatchVerdict] = field(default_factory=list)


def slide_overlays(catalog: Catalog, slide_id: int, model_version_id: int | None = None,
                   reviewer: str | None = None) -> SlideOverlays:
    """Every patch of a slide with its attention and queue place under a model version (default: the
    latest), and each reviewer's latest verdict per patch, except on queued patches ``reviewer`` may
    still judge (a double read stays blind)."""
    mv = model_version_id if model_version_id is not None else latest_model_version_id(catalog)
    out = SlideOverlays(model_version_id=mv)
    with catalog.session() as session:
        patches = session.execute(
            select(Patch.id, Patch.x, Patch.y, Patch.size).where(Patch.slide_id == slide_id).order_by(Patch.id)
        ).all()
        if mv is not None:
            out.queued = list(
                session.scalars(
                    select(ReviewQueueItem.patch_id)
                    .join(Patch, Patch.id == ReviewQueueItem.patch_id)
                    .where(Patch.slide_id == slide_id, ReviewQueueItem.model_version_id == mv)
                    .order_by(ReviewQueueItem.rank, ReviewQueueItem.id)
                ).all()
            )
        hidden = open_patches(session, mv, reviewer, patch_ids=out.queued) if mv is not None else set()
        latest: dict[tuple[int, str], PatchVerdict] = {}
        for review_id, patch_id, verdict, by in session.execute(
            select(Review.id, Review.patch_id, Review.verdict, Review.reviewer)
            .join(Patch, Patch.id == Review.patch_id)
            .where(Patch.slide_id == slide_id, counting())
            .order_by(Review.id)
        ).all():
            if patch_id not in hidden:
                latest[(patch_id, by)] = PatchVerdict(patch_id, verdict, by, review_id)
    attention: dict[int, float] = {}
    scores = version_scores(catalog, mv)
    if scores is not None:
        ids, rows = scores.rows(p[0] for p in patches)
        attention = dict(zip(ids.tolist(), rows["attention"].tolist()))
    for pid, x, y, size in patches:
        out.patch_ids.append(pid)
        out.x.append(int(x))
        out.y.append(int(y))
        out.size.append(int(size))
        value = attention.get(pid)
        out.attention.append(float(value) if value is not None else None)
    out.verdicts = sorted(latest.values(), key=lambda v: v.review_id)
    return out
