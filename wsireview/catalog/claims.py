"""Work shared out between reviewers: short leases ("claims") on queued patches.

Reviewers working on one queue at the same time must not get the same patches. Each holds a few
pending patches of the queue at a time (``ClaimPolicy.batch``) on a short lease: renewed while they
work (every top-up renews, and the app renews on a timer), released when they quit, and free for
anyone once it expires, so an app that crashed frees its claims by itself.

A claim is one row per patch (the ``claims`` primary key), taken by one conditional upsert: insert,
or on conflict take the row over only when its lease has expired or it is already the reviewer's.
The database decides, on SQLite and on PostgreSQL alike, so two reviewers can never hold a live
claim on one patch however their requests interleave.

Who may see a queued patch is one rule, :func:`may_see`; the terminal app, the web viewer and the
claim itself all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Collection

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from wsireview.catalog.db import Catalog
from wsireview.catalog.models import Claim, Patch, Review, ReviewQueueItem, utcnow
from wsireview.errors import WsireviewError

TAKE_ATTEMPTS = 3  # candidates taken by someone else in between: look again, at most this often


@dataclass(frozen=True)
class ClaimPolicy:
    """How work is shared out: the one owner of these settings."""

    batch: int = 5  # pending patches a reviewer holds at once
    lease_seconds: float = 300.0  # a claim not renewed for this long is free for anyone

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @property
    def renew_every_seconds(self) -> float:
        """How often a working app renews its claims: well inside the lease."""
        return self.lease_seconds / 3


CLAIMS = ClaimPolicy()


class ClaimsUnsupported(WsireviewError):
    """The catalog's database has no conditional upsert that claims rely on."""


# -- who may see a queued patch -------------------------------------------------------------------

PatchColumn = InstrumentedAttribute[int]


def judged_by(reviewer: str, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """The reviewer has a verdict on the patch that is not undone."""
    return exists().where(Review.patch_id == patch, Review.reviewer == reviewer, Review.undone_at.is_(None))


def judged_by_others(reviewer: str, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """Someone other than the reviewer has a verdict on the patch that is not undone."""
    return exists().where(Review.patch_id == patch, Review.reviewer != reviewer, Review.undone_at.is_(None))


def claimed_by_others(reviewer: str, now: datetime, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """Someone other than the reviewer holds a live claim on the patch."""
    return exists().where(Claim.patch_id == patch, Claim.reviewer != reviewer, Claim.expires_at > now)


def held_by(reviewer: str, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """The reviewer's name is on the patch's claim row (renewing it makes it live again)."""
    return exists().where(Claim.patch_id == patch, Claim.reviewer == reviewer)


def may_see(reviewer: str, now: datetime, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """THE rule for which queued patches a reviewer's queue shows: those they judged themselves, and
    those nobody else judged or holds a live claim on. Everything that lists or claims queued patches
    for a reviewer uses this condition (extend it here, e.g. for double reads)."""
    return or_(judged_by(reviewer, patch),
               and_(~judged_by_others(reviewer, patch), ~claimed_by_others(reviewer, now, patch)))


# -- taking, renewing and releasing claims --------------------------------------------------------

def claim_patches(
    catalog: Catalog,
    reviewer: str,
    model_version_id: int,
    *,
    slide_id: int | None = None,
    exclude: Collection[int] = (),
    policy: ClaimPolicy = CLAIMS,
    now: datetime | None = None,
) -> list[int]:
    """Renew every claim the reviewer holds and top up their claims on the queue of
    ``model_version_id`` (one slide's part of it when ``slide_id`` is given) to ``policy.batch``
    patches they have not judged; returns those patches in queue order.

    ``exclude``: patches the reviewer set aside (skipped) in this sitting, neither counted nor taken.
    """
    now = now or utcnow()
    expires = now + policy.lease
    with catalog.session() as session:
        # A write first: on SQLite the transaction then holds the write lock throughout, so the
        # candidates it reads cannot go stale before it takes them.
        session.execute(update(Claim).where(Claim.reviewer == reviewer).values(expires_at=expires))
        held = _held(session, reviewer, model_version_id, slide_id, exclude, now)
        for _ in range(TAKE_ATTEMPTS):
            missing = policy.batch - len(held)
            if missing <= 0:
                break
            stmt = (_queue(model_version_id, slide_id, exclude)
                    .where(may_see(reviewer, now), ~judged_by(reviewer), ~held_by(reviewer))
                    .limit(missing))
            candidates = list(session.scalars(stmt).all())
            if not candidates:
                break
            _take(session, reviewer, model_version_id, candidates, now, expires)
            held = _held(session, reviewer, model_version_id, slide_id, exclude, now)
        return held


def renew_claims(catalog: Catalog, reviewer: str, policy: ClaimPolicy = CLAIMS, now: datetime | None = None) -> int:
    """Extend every claim the reviewer holds by a full lease; returns how many."""
    expires = (now or utcnow()) + policy.lease
    with catalog.session() as session:
        return session.execute(update(Claim).where(Claim.reviewer == reviewer).values(expires_at=expires)).rowcount


def release_claims(catalog: Catalog, reviewer: str, patch_ids: Collection[int] | None = None) -> int:
    """Give back the reviewer's claims (all of them, or on ``patch_ids``): on quit, on a skip, when
    switching to another queue. Returns how many were released."""
    stmt = delete(Claim).where(Claim.reviewer == reviewer)
    if patch_ids is not None:
        if not patch_ids:
            return 0
        stmt = stmt.where(Claim.patch_id.in_(list(patch_ids)))
    with catalog.session() as session:
        return session.execute(stmt).rowcount


@dataclass(frozen=True)
class LiveClaim:
    patch_id: int
    reviewer: str
    model_version_id: int | None
    expires_at: datetime


def live_claims(catalog: Catalog, now: datetime | None = None) -> list[LiveClaim]:
    """Every claim whose lease has not expired, by patch."""
    now = now or utcnow()
    with catalog.session() as session:
        rows = session.execute(
            select(Claim.patch_id, Claim.reviewer, Claim.model_version_id, Claim.expires_at)
            .where(Claim.expires_at > now).order_by(Claim.patch_id)
        ).all()
    return [LiveClaim(*row) for row in rows]


# -- inside a claim's transaction -----------------------------------------------------------------

def _queue(model_version_id: int, slide_id: int | None, exclude: Collection[int]):
    stmt = (select(ReviewQueueItem.patch_id)
            .where(ReviewQueueItem.model_version_id == model_version_id)
            .order_by(ReviewQueueItem.rank, ReviewQueueItem.id))
    if slide_id is not None:
        stmt = stmt.join(Patch, Patch.id == ReviewQueueItem.patch_id).where(Patch.slide_id == slide_id)
    if exclude:
        stmt = stmt.where(ReviewQueueItem.patch_id.not_in(list(exclude)))
    return stmt


def _held(session: Session, reviewer: str, model_version_id: int, slide_id: int | None,
          exclude: Collection[int], now: datetime) -> list[int]:
    """The queue's patches the reviewer holds and has yet to judge, in queue order."""
    stmt = _queue(model_version_id, slide_id, exclude).where(
        held_by(reviewer), may_see(reviewer, now), ~judged_by(reviewer))
    return list(session.scalars(stmt).all())


def _take(session: Session, reviewer: str, model_version_id: int, patch_ids: list[int],
          now: datetime, expires: datetime) -> None:
    """Claim each patch unless someone else holds a live claim on it: one upsert whose conflict
    branch only takes over an expired claim or the reviewer's own."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise ClaimsUnsupported(f"claims need SQLite or PostgreSQL; this catalog is on {dialect}")
    stmt = insert(Claim).values([
        {"patch_id": pid, "reviewer": reviewer, "model_version_id": model_version_id,
         "claimed_at": now, "expires_at": expires}
        for pid in patch_ids
    ])
    stmt = stmt.on_conflict_do_update(
        index_elements=[Claim.patch_id],
        set_={"reviewer": stmt.excluded.reviewer, "model_version_id": stmt.excluded.model_version_id,
              "claimed_at": stmt.excluded.claimed_at, "expires_at": stmt.excluded.expires_at},
        where=or_(Claim.expires_at <= now, Claim.reviewer == reviewer),
    )
    session.execute(stmt)
