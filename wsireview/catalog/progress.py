"""How far a review queue has come, for one reviewer and for the team, read from the catalog.

A reviewer's own count and the team's are different numbers and every screen says which is which:
"you 6 · team 20/50". An item counts as reviewed by the team when it has all the reads it asks for
(:func:`~wsireview.catalog.verdicts.may_judge` for nobody new): a double read half done is still
queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import and_, func, select

from wsireview.catalog.db import Catalog
from wsireview.catalog.models import READ, Claim, Patch, Review, ReviewQueueItem, utcnow
from wsireview.catalog.verdicts import may_judge


@dataclass(frozen=True)
class QueueProgress:
    model_version_id: int
    queued: int  # patches in the queue
    team: int  # queued items with all their reads
    by_reviewer: dict[str, int] = field(default_factory=dict)  # queued patches each reviewer read
    claimed: dict[str, int] = field(default_factory=dict)  # queued items still waiting for a read, on a live claim

    def yours(self, reviewer: str) -> int:
        return self.by_reviewer.get(reviewer, 0)

    def counted(self, reviewer: str, change: int, completes: bool = True) -> "QueueProgress":
        """These counts after the reviewer judged (+1) or undid (-1) a patch nobody else had judged
        (``completes``: the read completes the item, as a single read does; a double read's counts
        wait for the next look at the catalog): what a screen shows until it reads the catalog again."""
        mine = {**self.by_reviewer, reviewer: max(0, self.yours(reviewer) + change)}
        return replace(self, team=max(0, self.team + (change if completes else 0)), by_reviewer=mine)

    def text(self, reviewer: str) -> str:
        """One line, the reviewer's count and the team's labelled: ``you 6 · team 20/50 reviewed``."""
        return f"you {self.yours(reviewer)} · team {self.team}/{self.queued} reviewed"

    def as_dict(self) -> dict:
        return {"model_version_id": self.model_version_id, "queued": self.queued, "reviewed_by_team": self.team,
                "reviewed_by_reviewer": dict(self.by_reviewer), "claimed_by_reviewer": dict(self.claimed)}


def queue_progress(catalog: Catalog, model_version_id: int, slide_id: int | None = None,
                   now: datetime | None = None) -> QueueProgress:
    """Counts for the queue of ``model_version_id`` (one slide's part of it when ``slide_id`` is given)."""
    now = now or utcnow()
    in_queue = select(ReviewQueueItem.patch_id).where(ReviewQueueItem.model_version_id == model_version_id)
    if slide_id is not None:
        in_queue = in_queue.join(Patch, Patch.id == ReviewQueueItem.patch_id).where(Patch.slide_id == slide_id)
    waiting = in_queue.where(may_judge(None))  # still needs a read: a double read half done included
    read = and_(Review.undone_at.is_(None), Review.role == READ)
    with catalog.session() as session:
        queued = session.scalar(select(func.count()).select_from(in_queue.subquery())) or 0
        team = queued - (session.scalar(select(func.count()).select_from(waiting.subquery())) or 0)
        by_reviewer = dict(session.execute(
            select(Review.reviewer, func.count(func.distinct(Review.patch_id)))
            .where(read, Review.patch_id.in_(in_queue)).group_by(Review.reviewer)
        ).all())
        claimed = dict(session.execute(
            select(Claim.reviewer, func.count())
            .where(Claim.expires_at > now, Claim.patch_id.in_(waiting))
            .group_by(Claim.reviewer)
        ).all())
    return QueueProgress(model_version_id, queued, team, by_reviewer, claimed)
