"""Recording verdicts: append-only reviews; undo and withdrawal mark rows undone.

A reviewer's verdict on a patch is their latest review of it that is not undone: changing a
verdict appends a new review (the old one stays, superseded), withdrawing marks every review of
theirs on the patch undone. Nothing is ever deleted, and export and training read the same rule.
"""

from __future__ import annotations

import getpass
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select

from wsireview.catalog import ADJUDICATION, READ, VERDICTS, Catalog, Patch, Review, Slide
from wsireview.catalog.queries import counting
from wsireview.catalog.verdicts import awaiting_adjudication, decide, load_reads


def default_reviewer() -> str:
    """The reviewer's name: $WSIREVIEW_REVIEWER, else the login name."""
    name = os.environ.get("WSIREVIEW_REVIEWER")
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def record_verdict(
    catalog: Catalog,
    patch_id: int,
    verdict: str,
    reviewer: str,
    seconds_taken: float | None = None,
    model_version_id: int | None = None,
    role: str = READ,
) -> int:
    """Append one verdict (a read, or with ``role=ADJUDICATION`` an adjudicator's decision) and
    commit it at once; returns the review id."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    with catalog.write_session() as session:
        review = Review(
            patch_id=patch_id,
            verdict=verdict,
            reviewer=reviewer,
            seconds_taken=seconds_taken,
            model_version_id=model_version_id,
            role=role,
        )
        session.add(review)
        session.flush()
        return review.id


def record_adjudication(catalog: Catalog, patch_id: int, verdict: str, adjudicator: str,
                        seconds_taken: float | None = None, model_version_id: int | None = None) -> int:
    """The adjudicator's decision on a patch whose reads disagree: it becomes the patch's verdict for
    training and export (the reads stay as they are); returns the review id."""
    return record_verdict(catalog, patch_id, verdict, adjudicator, seconds_taken, model_version_id, ADJUDICATION)


def undo_last(catalog: Catalog, reviewer: str) -> Review | None:
    """Mark this reviewer's latest verdict that is not yet undone as undone; returns it, or None."""
    with catalog.write_session() as session:
        review = session.scalar(
            select(Review)
            .where(Review.reviewer == reviewer, Review.undone_at.is_(None))
            .order_by(Review.id.desc())
            .limit(1)
        )
        if review is None:
            return None
        review.undone_at = datetime.now(timezone.utc)
        return review


def undo_review(catalog: Catalog, review_id: int) -> Review | None:
    """Mark one verdict undone (the triage screen undoes only what its own queue view recorded);
    returns it, or None when it is unknown or already undone."""
    with catalog.write_session() as session:
        review = session.get(Review, review_id)
        if review is None or review.undone_at is not None:
            return None
        review.undone_at = datetime.now(timezone.utc)
        return review


def verdict_counts(catalog: Catalog) -> dict:
    """Counts of reads that count, by verdict and by reviewer; the patches by their verdict under the
    one rule (``by_patch``: adjudicated, else majority; ``no_verdict``: ties and all-unsure); the
    adjudication queue (for `status --json` and `status`)."""
    with catalog.session() as session:
        patches = load_reads(session)
        pending = len(awaiting_adjudication(session, patches))
        by_patch: Counter = Counter()
        for patch in patches.values():
            verdict, _ = decide(patch.reads, patch.adjudication)
            by_patch[verdict or "no_verdict"] += 1
        by_verdict = dict(
            session.execute(
                select(Review.verdict, func.count()).where(counting()).group_by(Review.verdict)
            ).all()
        )
        by_reviewer: dict[str, dict[str, int]] = {}
        for reviewer, verdict, count in session.execute(
            select(Review.reviewer, Review.verdict, func.count())
            .where(counting())
            .group_by(Review.reviewer, Review.verdict)
        ).all():
            by_reviewer.setdefault(reviewer, {})[verdict] = count
    adjudication = {"pending": pending,
                    "decided": sum(1 for p in patches.values() if p.adjudication is not None)}
    return {"by_verdict": by_verdict, "by_reviewer": by_reviewer, "total": sum(by_verdict.values()),
            "by_patch": dict(by_patch), "adjudication": adjudication}


# -- changing one's mind ----------------------------------------------------------------------------

def change_verdict(catalog: Catalog, patch_id: int, reviewer: str, verdict: str) -> int:
    """Give a patch a new verdict: a new review appended (the reviewer's earlier one stays in the
    history, superseded), keeping the model version that flagged the patch; returns its id."""
    with catalog.session() as session:
        flagged_by = session.scalar(
            select(Review.model_version_id).where(Review.patch_id == patch_id, Review.reviewer == reviewer,
                                                  Review.role == READ)
            .order_by(Review.id.desc()).limit(1)
        )
    return record_verdict(catalog, patch_id, verdict, reviewer, None, flagged_by)


def withdraw_verdict(catalog: Catalog, patch_id: int, reviewer: str) -> int:
    """Withdraw the reviewer's verdict on a patch: each of their reviews of it that still counted is
    marked undone (an earlier, superseded verdict must not come back). Returns how many were marked."""
    with catalog.session() as session:
        rows = session.scalars(
            select(Review).where(Review.patch_id == patch_id, Review.reviewer == reviewer, Review.undone_at.is_(None),
                                 Review.role == READ)
        ).all()
        now = datetime.now(timezone.utc)
        for review in rows:
            review.undone_at = now
        return len(rows)


WITHDRAWN = "withdrawn"  # a history entry whose reviews are all undone


@dataclass(frozen=True)
class HistoryEntry:
    """One patch a reviewer gave a verdict to, as it stands now.

    Carries the slide fields the patch reader needs (``slide_path``, ``x``, ``y``, ``size``,
    ``patch_size_px``), so a screen can show the patch beside the verdict.
    """

    patch_id: int
    verdict: str  # the verdict that counts, or WITHDRAWN
    earlier: tuple[str, ...]  # the verdicts given before, oldest first (changed or undone)
    changed_at: datetime  # the latest verdict or withdrawal
    reviews: int
    slide_id: int
    slide_name: str
    slide_path: str
    slide_width: int | None
    slide_height: int | None
    thumbnail_path: str | None
    patch_size_px: int | None
    x: int
    y: int
    size: int


def reviewer_history(
    catalog: Catalog, reviewer: str, slide_id: int | None = None, verdict: str | None = None
) -> list[HistoryEntry]:
    """The patches a reviewer judged, newest change first, optionally one slide's or one verdict's
    (``WITHDRAWN`` for the withdrawn ones)."""
    stmt = (
        select(Review, Patch, Slide)
        .join(Patch, Patch.id == Review.patch_id)
        .join(Slide, Slide.id == Patch.slide_id)
        .where(Review.reviewer == reviewer, Review.role == READ)
        .order_by(Review.id)
    )
    if slide_id is not None:
        stmt = stmt.where(Slide.id == slide_id)
    with catalog.session() as session:
        rows = session.execute(stmt).all()
    by_patch: dict[int, list] = {}
    for review, patch, slide in rows:
        by_patch.setdefault(patch.id, []).append((review, patch, slide))
    entries = []
    for patch_id, items in by_patch.items():
        reviews = [r for r, _, _ in items]
        standing = [r for r in reviews if r.undone_at is None]
        current = standing[-1] if standing else None
        when = current.created_at if current else max(r.undone_at for r in reviews)
        _, patch, slide = items[-1]
        earlier = tuple(r.verdict for r in reviews if r is not current)
        entries.append(HistoryEntry(
            patch_id=patch_id, verdict=current.verdict if current else WITHDRAWN, earlier=earlier,
            changed_at=_aware(when), reviews=len(reviews), slide_id=slide.id, slide_name=slide.name,
            slide_path=slide.path, slide_width=slide.width, slide_height=slide.height,
            thumbnail_path=slide.thumbnail_path, patch_size_px=slide.patch_size_px,
            x=patch.x, y=patch.y, size=patch.size,
        ))
    if verdict is not None:
        entries = [e for e in entries if e.verdict == verdict]
    return sorted(entries, key=lambda e: (e.changed_at, e.patch_id), reverse=True)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC): make them comparable with aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
