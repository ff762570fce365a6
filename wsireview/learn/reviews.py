"""Recording verdicts: append-only reviews, undo marks the latest one undone."""

from __future__ import annotations

import getpass
import os
from datetime import datetime, timezone

from sqlalchemy import func, select

from wsireview.catalog import VERDICTS, Catalog, Review


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
) -> int:
    """Append one verdict and commit it at once; returns the review id."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
    with catalog.session() as session:
        review = Review(
            patch_id=patch_id,
            verdict=verdict,
            reviewer=reviewer,
            seconds_taken=seconds_taken,
            model_version_id=model_version_id,
        )
        session.add(review)
        session.flush()
        return review.id


def undo_last(catalog: Catalog, reviewer: str) -> Review | None:
    """Mark this reviewer's latest verdict that is not yet undone as undone; returns it, or None."""
    with catalog.session() as session:
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
    with catalog.session() as session:
        review = session.get(Review, review_id)
        if review is None or review.undone_at is not None:
            return None
        review.undone_at = datetime.now(timezone.utc)
        return review


def active_reviews(session, patch_ids=None):
    """A select of reviews that count (not undone), optionally for some patches."""
    stmt = select(Review).where(Review.undone_at.is_(None))
    if patch_ids is not None:
        stmt = stmt.where(Review.patch_id.in_(list(patch_ids)))
    return stmt


def verdict_counts(catalog: Catalog) -> dict:
    """Counts of verdicts that count, by verdict and by reviewer (for `status --json`)."""
    with catalog.session() as session:
        by_verdict = dict(
            session.execute(
                select(Review.verdict, func.count()).where(Review.undone_at.is_(None)).group_by(Review.verdict)
            ).all()
        )
        by_reviewer: dict[str, dict[str, int]] = {}
        for reviewer, verdict, count in session.execute(
            select(Review.reviewer, Review.verdict, func.count())
            .where(Review.undone_at.is_(None))
            .group_by(Review.reviewer, Review.verdict)
        ).all():
            by_reviewer.setdefault(reviewer, {})[verdict] = count
    return {"by_verdict": by_verdict, "by_reviewer": by_reviewer, "total": sum(by_verdict.values())}
