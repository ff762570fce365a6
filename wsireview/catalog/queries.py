"""Read queries for the review app: plain dataclasses out, no ORM objects leak to the UI.

Each function opens its own short session so a screen can call it from any thread and hold the
result without keeping a connection open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, func, select

from wsireview.catalog.claims import may_see
from wsireview.catalog.db import Catalog
from wsireview.catalog.score_files import SCORES_OK, scores_state, version_scores
from wsireview.catalog.models import (
    READY,
    ModelVersion,
    Patch,
    Review,
    ReviewQueueItem,
    Slide,
    SlidePrediction,
    utcnow,
)
from wsireview.catalog.verdicts import (
    awaiting_adjudication,
    counting,
    load_reads,
    may_judge,
    open_patches,
    shown_verdict,
)

__all__ = ["counting"]  # re-exported: older callers import it from here


# -- model versions -------------------------------------------------------------------------------

def latest_model_version(catalog: Catalog, encoder: str | None = None) -> ModelVersion | None:
    """The newest model version that finished (status ready), optionally of one encoder; None
    before the first training. A version still training or failed is never the latest."""
    with catalog.session() as session:
        stmt = select(ModelVersion).where(ModelVersion.status == READY)
        if encoder is not None:
            stmt = stmt.where(ModelVersion.encoder == encoder)
        return session.scalar(stmt.order_by(ModelVersion.id.desc()).limit(1))


def latest_model_version_id(catalog: Catalog) -> int | None:
    """The id of :func:`latest_model_version`, or None before the first training (one small query:
    the review screens ask it on every patch to notice a newer version)."""
    with catalog.session() as session:
        return session.scalar(select(func.max(ModelVersion.id)).where(ModelVersion.status == READY))


@dataclass(frozen=True)
class ModelVersionSummary:
    id: int
    parent_id: int | None
    encoder: str
    positive_label: str
    status: str
    created_at: datetime | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    label_counts: dict[str, Any]
    queued: int
    reviews: int  # verdicts (not undone) given to patches this version queued
    scores: str = SCORES_OK  # its per-patch scores: ok, "scores pruned" or "score file missing"

    def metric_changes(self, parent: "ModelVersionSummary | None") -> dict[str, float]:
        """Numeric metrics that both this version and its parent have: this minus parent."""
        if parent is None:
            return {}
        return {
            key: float(value) - float(parent.metrics[key])
            for key, value in _numeric(self.metrics).items()
            if key in _numeric(parent.metrics)
        }


def _numeric(values: dict[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v) for k, v in (values or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def model_versions(catalog: Catalog) -> list[ModelVersionSummary]:
    """Every model version, newest first, with its queue size and the verdicts it collected."""
    with catalog.session() as session:
        queued = dict(
            session.execute(
                select(ReviewQueueItem.model_version_id, func.count()).group_by(ReviewQueueItem.model_version_id)
            ).all()
        )
        reviews = dict(
            session.execute(
                select(Review.model_version_id, func.count())
                .where(counting())
                .group_by(Review.model_version_id)
            ).all()
        )
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).all()
        return [
            ModelVersionSummary(
                id=m.id, parent_id=m.parent_id, encoder=m.encoder, positive_label=m.positive_label,
                status=m.status, created_at=m.created_at, params=dict(m.params or {}),
                metrics=dict(m.metrics or {}), label_counts=dict(m.label_counts or {}),
                queued=queued.get(m.id, 0), reviews=reviews.get(m.id, 0), scores=scores_state(catalog, m.scores_path),
            )
            for m in rows
        ]


# -- slides ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlideOverview:
    """One row of the slides screen."""

    id: int
    name: str
    path: str
    status: str
    reason: str | None
    warning: str | None
    vendor: str | None
    width: int | None
    height: int | None
    levels: int | None
    mpp: float | None
    objective_power: float | None
    tissue_fraction: float | None
    label: str | None
    patch_size_px: int | None
    patch_size_level0: int | None
    thumbnail_path: str | None
    mask_path: str | None
    overlay_path: str | None
    patches: int
    probability: float | None  # the latest model version's P(positive) for the slide
    reviewed: int  # patches with a verdict that counts
    queued: int  # patches of the latest queue still without a verdict
    label_set_by: str | None = None  # who set the label (a reviewer, or csv:<file>)
    label_set_at: datetime | None = None
    resolution_source: str | None = None  # where mpp came from (file metadata, --mpp, ...)


def slides_overview(catalog: Catalog) -> list[SlideOverview]:
    """All slides by name with counts and the latest prediction, in grouped queries whose cost follows
    the slides, reviews and queue, never the patches: the patch count is the one ingest stored."""
    latest = latest_model_version_id(catalog)
    with catalog.session() as session:
        slides = session.scalars(select(Slide).order_by(Slide.name, Slide.id)).all()
        patches = {s.id: s.patch_count for s in slides if s.patch_count is not None}
        uncounted = [s.id for s in slides if s.patch_count is None]
        if uncounted:  # rows written without a count (not by ingest): counted, a few at a time
            for start in range(0, len(uncounted), 500):
                patches.update(session.execute(
                    select(Patch.slide_id, func.count()).where(Patch.slide_id.in_(uncounted[start:start + 500]))
                    .group_by(Patch.slide_id)).all())
        # From the reviews' side: each counting review's patch looked up by id (scanning patches
        # for their reviews took 1.3 s at 5 million patches).
        reviewed_patches = select(Review.patch_id).where(counting()).distinct().subquery()
        reviewed = dict(
            session.execute(
                select(Patch.slide_id, func.count())
                .select_from(reviewed_patches)
                .join(Patch, Patch.id == reviewed_patches.c.patch_id)
                .group_by(Patch.slide_id)
            ).all()
        )
        probability: dict[int, float] = {}
        queued: dict[int, int] = {}
        if latest is not None:
            probability = dict(
                session.execute(
                    select(SlidePrediction.slide_id, SlidePrediction.probability).where(
                        SlidePrediction.model_version_id == latest
                    )
                ).all()
            )
            has_verdict = select(Review.patch_id).where(counting())
            queued = dict(
                session.execute(
                    select(Patch.slide_id, func.count())
                    .join(ReviewQueueItem, ReviewQueueItem.patch_id == Patch.id)
                    .where(ReviewQueueItem.model_version_id == latest, Patch.id.not_in(has_verdict))
                    .group_by(Patch.slide_id)
                ).all()
            )
        return [
            SlideOverview(
                id=s.id, name=s.name, path=s.path, status=s.status, reason=s.reason, warning=s.warning,
                vendor=s.vendor, width=s.width, height=s.height, levels=s.level_count, mpp=s.mpp_x,
                objective_power=s.objective_power, tissue_fraction=s.tissue_fraction, label=s.label,
                patch_size_px=s.patch_size_px, patch_size_level0=s.patch_size_level0,
                thumbnail_path=s.thumbnail_path, mask_path=s.mask_path, overlay_path=s.overlay_path,
                patches=patches.get(s.id, 0), probability=probability.get(s.id),
                reviewed=reviewed.get(s.id, 0), queued=queued.get(s.id, 0),
                label_set_by=s.label_set_by, label_set_at=s.label_set_at, resolution_source=s.resolution_source,
            )
            for s in slides
        ]


def find_slide(catalog: Catalog, name: str) -> int | None:
    """A slide id by exact name, else by path, else a unique name prefix; None when not found."""
    with catalog.session() as session:
        for stmt in (select(Slide.id).where(Slide.name == name), select(Slide.id).where(Slide.path == name)):
            ids = session.scalars(stmt).all()
            if len(ids) == 1:
                return ids[0]
        ids = session.scalars(select(Slide.id).where(Slide.name.startswith(name, autoescape=True))).all()
        return ids[0] if len(ids) == 1 else None


# -- the review queue -----------------------------------------------------------------------------

class PatchLocation(Protocol):
    """Where a patch lies, as the patch reader needs it: a queue entry and a history entry both carry it."""

    @property
    def slide_path(self) -> str: ...
    @property
    def x(self) -> int: ...
    @property
    def y(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def patch_size_px(self) -> int | None: ...


@dataclass(frozen=True)
class QueueEntry:
    """A patch to review and everything the triage screen shows about it."""

    queue_id: int
    rank: int
    reason: str
    score: float | None
    model_version_id: int
    patch_id: int
    x: int
    y: int
    size: int
    slide_id: int
    slide_name: str
    slide_path: str
    slide_status: str
    slide_label: str | None
    slide_probability: float | None
    slide_width: int | None
    slide_height: int | None
    patch_size_px: int | None
    thumbnail_path: str | None
    attention: float | None
    attention_rank: int | None
    probability: float | None
    verdict: str | None = None  # the patch's verdict as shown (verdicts.shown_verdict), None while the reviewer may judge it
    done: bool = False  # the reviewer may not judge it (any more): judged, or read by enough others
    reads: int = 1  # different reviewers the item asks for (2: a blinded double read)
    # (reviewer, verdict) of every read: shown to an adjudicator only, never in a reviewer's queue
    shown_reads: tuple[tuple[str, str], ...] = ()


def queue_entries(catalog: Catalog, slide_id: int | None = None, model_version_id: int | None = None,
                  reviewer: str | None = None) -> list[QueueEntry]:
    """The queue of a model version (default: the latest) in presentation order, optionally one slide's,
    as ``reviewer`` sees it (None: every item, as a reviewer who has judged nothing sees it).

    With ``reviewer``: only what that reviewer's queue shows (``claims.may_see``: the items they may
    take, by the one rule, and those they read themselves; not an item another reviewer holds a claim
    on or that has all its reads). Items the reviewer may not judge
    (:func:`~wsireview.catalog.verdicts.may_judge`) have ``done`` set, so progress counts them and the
    screen skips them. An item the reviewer may still judge carries no verdict, whatever others said:
    a double read is blind.
    """
    mv = model_version_id if model_version_id is not None else latest_model_version_id(catalog)
    if mv is None:
        return []
    stmt = (
        select(ReviewQueueItem, Patch, Slide, SlidePrediction.probability, may_judge(reviewer).label("still_open"))
        .join(Patch, Patch.id == ReviewQueueItem.patch_id)
        .join(Slide, Slide.id == Patch.slide_id)
        .outerjoin(
            SlidePrediction,
            and_(SlidePrediction.slide_id == Slide.id, SlidePrediction.model_version_id == ReviewQueueItem.model_version_id),
        )
        .where(ReviewQueueItem.model_version_id == mv)
        .order_by(ReviewQueueItem.rank, ReviewQueueItem.id)
    )
    if slide_id is not None:
        stmt = stmt.where(Slide.id == slide_id)
    if reviewer is not None:
        stmt = stmt.where(may_see(reviewer, utcnow()))
    with catalog.session() as session:
        rows = session.execute(stmt).all()
        reads = load_reads(session, [r[1].id for r in rows])
        verdicts = {pid: shown_verdict(patch) for pid, patch in reads.items()}
    scores_file = version_scores(catalog, mv)
    scores = scores_file.lookup(r[1].id for r in rows) if scores_file is not None else {}
    out = []
    for q, p, s, prob, still_open in rows:
        score = scores.get(p.id)
        out.append(QueueEntry(
            queue_id=q.id, rank=q.rank, reason=q.reason, score=q.score, model_version_id=q.model_version_id,
            patch_id=p.id, x=p.x, y=p.y, size=p.size, slide_id=s.id, slide_name=s.name, slide_path=s.path,
            slide_status=s.status, slide_label=s.label, slide_probability=prob, slide_width=s.width,
            slide_height=s.height, patch_size_px=s.patch_size_px, thumbnail_path=s.thumbnail_path,
            attention=score.attention if score else None,
            attention_rank=score.attention_rank if score else None,
            probability=score.probability if score else None,
            verdict=None if still_open else verdicts.get(p.id), done=not still_open, reads=q.reads,
        ))
    return out


ADJUDICATION_REASON = "adjudication"


def adjudication_entries(catalog: Catalog) -> list[QueueEntry]:
    """The adjudication queue: patches whose reads disagree (or were all unsure) and that no
    adjudicator has decided, oldest first, each with every reader's verdict and name
    (``shown_reads``) and the latest model's scores."""
    latest = latest_model_version_id(catalog)
    with catalog.session() as session:
        every = load_reads(session)
        waiting = {pid: every[pid] for pid in awaiting_adjudication(session, every)}
        if not waiting:
            return []
        rows: list[Any] = []
        ids = sorted(waiting)
        for start in range(0, len(ids), 500):
            rows += session.execute(
                select(Patch, Slide, SlidePrediction.probability)
                .join(Slide, Slide.id == Patch.slide_id)
                .outerjoin(SlidePrediction, and_(SlidePrediction.slide_id == Slide.id,
                                                 SlidePrediction.model_version_id == latest))
                .where(Patch.id.in_(ids[start:start + 500]))
            ).all()
    order = {pid: min(v.review_id for v in waiting[pid].reads) for pid in waiting}
    rows.sort(key=lambda r: order[r[0].id])
    scores_file = version_scores(catalog, latest)
    scores = scores_file.lookup(ids) if scores_file is not None else {}
    out = []
    for rank, (p, s, prob) in enumerate(rows, start=1):
        score = scores.get(p.id)
        reads = waiting[p.id].reads
        flagged = [v.model_version_id for v in reads if v.model_version_id is not None]
        out.append(QueueEntry(
            queue_id=0, rank=rank, reason=ADJUDICATION_REASON, score=None,
            model_version_id=flagged[-1] if flagged else (latest or 0), patch_id=p.id, x=p.x, y=p.y, size=p.size,
            slide_id=s.id, slide_name=s.name, slide_path=s.path, slide_status=s.status, slide_label=s.label,
            slide_probability=prob, slide_width=s.width, slide_height=s.height, patch_size_px=s.patch_size_px,
            thumbnail_path=s.thumbnail_path, attention=score.attention if score else None,
            attention_rank=score.attention_rank if score else None,
            probability=score.probability if score else None,
            shown_reads=tuple((v.reviewer, v.verdict) for v in reads),
        ))
    return out


# -- one slide's patches --------------------------------------------------------------------------

@dataclass(frozen=True)
class SlidePatch:
    """A patch of one slide that is queued in the latest queue or carries a verdict."""

    patch_id: int
    x: int
    y: int
    size: int
    verdict: str | None  # the patch's verdict as shown (verdicts.shown_verdict); None while the reviewer may judge it
    queue_rank: int | None  # its place in the latest queue, if queued there
    reason: str | None  # why it was queued
    attention: float | None  # under the latest model
    attention_rank: int | None
    probability: float | None


def slide_patches(catalog: Catalog, slide_id: int, also: int | None = None,
                  reviewer: str | None = None) -> list[SlidePatch]:
    """The slide's queued patches in queue order, then its other reviewed patches by attention rank
    (and the patch ``also``, whatever its state: the one a screen was opened for), as ``reviewer``
    sees them (no verdict on a queued patch they may still judge)."""
    queued = queue_entries(catalog, slide_id=slide_id, reviewer=reviewer)
    in_queue = {e.patch_id for e in queued}
    latest = latest_model_version_id(catalog)
    with catalog.session() as session:
        reviewed_ids = session.scalars(
            select(Review.patch_id).join(Patch, Patch.id == Review.patch_id)
            .where(Patch.slide_id == slide_id, counting()).distinct()
        ).all()
        others = [pid for pid in reviewed_ids if pid not in in_queue]
        if also is not None and also not in in_queue and also not in others:
            others.append(also)
        hidden = open_patches(session, latest, reviewer, others) if latest is not None else set()
        verdicts = {pid: shown_verdict(patch) for pid, patch in load_reads(session, others).items()
                    if pid not in hidden}
        rows = session.scalars(select(Patch).where(Patch.id.in_(others), Patch.slide_id == slide_id)).all() if others else []
    scores_file = version_scores(catalog, latest) if rows else None
    scores = scores_file.lookup(p.id for p in rows) if scores_file is not None else {}
    out = [
        SlidePatch(e.patch_id, e.x, e.y, e.size, e.verdict, e.rank, e.reason, e.attention, e.attention_rank,
                   e.probability)
        for e in queued
    ]
    rest = []
    for p in rows:
        score = scores.get(p.id)
        rest.append(SlidePatch(p.id, p.x, p.y, p.size, verdicts.get(p.id), None, None,
                               score.attention if score else None, score.attention_rank if score else None,
                               score.probability if score else None))
    return out + sorted(rest, key=lambda sp: (sp.attention_rank is None, sp.attention_rank or 0, sp.patch_id))


# -- overlays and session summaries ---------------------------------------------------------------

@dataclass(frozen=True)
class PatchAttention:
    x: int
    y: int
    size: int
    attention: float


def slide_attention(catalog: Catalog, slide_id: int, model_version_id: int | None = None) -> list[PatchAttention]:
    """Every scored patch of a slide under a model version (default: latest), level-0 coordinates."""
    mv = model_version_id if model_version_id is not None else latest_model_version_id(catalog)
    if mv is None:
        return []
    scores_file = version_scores(catalog, mv)
    if scores_file is None:
        return []
    with catalog.session() as session:
        rows = session.execute(select(Patch.id, Patch.x, Patch.y, Patch.size).where(Patch.slide_id == slide_id)).all()
    ids, scored = scores_file.rows(r[0] for r in rows)
    attention = dict(zip(ids.tolist(), scored["attention"].tolist()))
    return [PatchAttention(int(x), int(y), int(s), float(attention[pid])) for pid, x, y, s in rows if pid in attention]


@dataclass
class ReviewSummary:
    """What a set of reviews amounts to: counts by verdict, undone ones left out, and time taken."""

    by_verdict: dict[str, int] = field(default_factory=dict)
    total: int = 0
    undone: int = 0
    seconds_total: float = 0.0

    @property
    def seconds_per_verdict(self) -> float | None:
        return self.seconds_total / self.total if self.total else None


def review_summary(catalog: Catalog, review_ids: list[int]) -> ReviewSummary:
    """Summarise the given reviews (e.g. one triage session's) as the catalog holds them now."""
    summary = ReviewSummary()
    if not review_ids:
        return summary
    with catalog.session() as session:
        for start in range(0, len(review_ids), 500):
            chunk = review_ids[start:start + 500]
            for verdict, seconds, undone_at in session.execute(
                select(Review.verdict, Review.seconds_taken, Review.undone_at).where(Review.id.in_(chunk))
            ).all():
                if undone_at is not None:
                    summary.undone += 1
                    continue
                summary.by_verdict[verdict] = summary.by_verdict.get(verdict, 0) + 1
                summary.total += 1
                summary.seconds_total += seconds or 0.0
    return summary

