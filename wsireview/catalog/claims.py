"""Work shared out between reviewers: short leases ("claims") on queued patches.

Reviewers working on one queue at the same time must not get the same patches. Each holds a few
pending patches of the queue at a time (``ClaimPolicy.batch``) on a short lease: renewed while they
work (every top-up renews, and the app renews on a timer), released when they quit, and free for
anyone once it expires, so an app that crashed frees its claims by itself.

A claim is one row per patch (the ``claims`` primary key), taken by one conditional upsert: insert,
or on conflict take the row over only when its lease has expired or it is already the reviewer's.
The database decides, on SQLite and on PostgreSQL alike, so two reviewers can never hold a live
claim on one patch however their requests interleave.

Who may take a queued patch is one rule, :func:`claimable_by`: the read rule of
:func:`wsireview.catalog.verdicts.may_judge` (a double read stays open until a second, different
reviewer has read it; nobody reads an item twice) and nobody else's live claim. What a reviewer's
queue shows, :func:`may_see`, adds what they read themselves; the terminal app, the web viewer and
the claim itself all go through it. The adjudication queue takes no claims: it lists patches whose
reads are complete, which no claim can hold back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Collection

from sqlalchemy import BindParameter, ColumnElement, Integer, and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, aliased

from wsireview.catalog.db import Catalog
from wsireview.catalog.models import Claim, Patch, ReviewQueueItem, utcnow
from wsireview.catalog.verdicts import may_judge, read_by
from wsireview.errors import WsireviewError

# On PostgreSQL, candidates someone else took in between: look again, up to TAKE_ATTEMPTS times while
# the reviewer holds something, and while there is anything to take when they hold nothing (each lost
# race means another reviewer got work, so this ends).
TAKE_ATTEMPTS = 3
MAX_ATTEMPTS = 100


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
Value = Any  # a plain value, or a bind parameter in the cached statements below
_OTHER = aliased(Claim, name="other_claim")  # the outer query may read the claims table too
_OWN = aliased(Claim, name="own_claim")


def claimed_by_others(reviewer: Value, now: Value, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """Someone other than the reviewer holds a live claim on the patch."""
    return exists().where(_OTHER.patch_id == patch, _OTHER.reviewer != reviewer, _OTHER.expires_at > now)


def held_by(reviewer: Value, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """The reviewer's name is on the patch's claim row (renewing it makes it live again)."""
    return exists().where(_OWN.patch_id == patch, _OWN.reviewer == reviewer)


def claimable_by(reviewer: Value, now: Value, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """THE rule for which queued patches a reviewer may take (and see undecided in their queue): they
    may judge it (:func:`~wsireview.catalog.verdicts.may_judge`: they have not read it, and it still
    needs a read: a double read stays open for a second, different reviewer), and nobody else holds a
    live claim on it. Claims, queue listings, the terminal app and the web viewer go through this."""
    return and_(may_judge(reviewer, patch), ~claimed_by_others(reviewer, now, patch))


def may_see(reviewer: Value, now: Value, patch: PatchColumn = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """What a reviewer's queue shows: the patches they may take (:func:`claimable_by`) and those
    they read themselves."""
    return or_(read_by(reviewer, patch), claimable_by(reviewer, now, patch))


# -- taking, renewing and releasing claims --------------------------------------------------------

def claim_patches(
    catalog: Catalog,
    reviewer: str,
    model_version_id: int,
    *,
    slide_id: int | None = None,
    exclude: Collection[int] = (),
    first: Collection[int] = (),
    policy: ClaimPolicy = CLAIMS,
    now: datetime | None = None,
) -> list[int]:
    """Renew the reviewer's claims and top up their claims on the queue of ``model_version_id``
    (one slide's part of it when ``slide_id`` is given) to ``policy.batch`` patches they may take
    (:func:`claimable_by`); returns those patches in queue order.

    ``exclude``: patches the reviewer set aside (skipped) in this sitting, neither counted nor taken.
    ``first``: patches to take before the queue's order (one whose verdict the reviewer just undid).

    Claims on patches the reviewer has read are dropped here: a completed read hides a patch from
    others by itself (:func:`claimable_by`), the half of a double read is free for its second
    reader, and the claims table stays as small as the work in progress.
    Whatever the interleaving, the upsert's condition refuses a patch someone else holds, so two
    reviewers never hold one patch; on PostgreSQL a candidate another claim took meanwhile makes
    this look again for the next ones.
    """
    now = now or utcnow()
    params: dict[str, Any] = {"who": reviewer, "version": model_version_id, "now": now,
                              "until": now + policy.lease, "exclude": list(exclude)}
    if slide_id is not None:
        params["slide"] = slide_id
    by_slide = slide_id is not None
    tried: set[int] = set()
    want = list(dict.fromkeys(first))
    held: list[int] = []
    upsert = _upsert_stmt(catalog.engine.dialect.name)
    for attempt in range(MAX_ATTEMPTS):
        # One short transaction holding the write lock (SQLite: reviewers claim one after another, so
        # nobody loses a race); Core statements built once, without the ORM's bookkeeping.
        with catalog.writing() as connection:
            held = list(connection.execute(_held_stmt(by_slide), params).scalars())
            candidates = [p for p in want if p not in held and p not in tried]  # taken even beyond the batch
            missing = policy.batch - len(held) - len(candidates)
            if missing > 0:
                candidates += connection.execute(_candidates_stmt(by_slide), {
                    **params, "exclude": [*exclude, *tried, *candidates], "limit": missing}).scalars()
            connection.execute(_renew_stmt(), params)
            connection.execute(_drop_judged_stmt(), params)
            if candidates:
                connection.execute(upsert, [{**params, "patch": pid} for pid in candidates])
            # Read again after the writes: on PostgreSQL a lapsed claim read as held above may have
            # been taken by another reviewer before this transaction's renew reached it.
            held = list(connection.execute(_held_stmt(by_slide), params).scalars())
        if not candidates or len(held) >= policy.batch or (held and attempt + 1 >= TAKE_ATTEMPTS):
            break
        tried.update(candidates)  # on PostgreSQL someone else took them meanwhile: the next ones
        want = []
    return held


def renew_claims(catalog: Catalog, reviewer: str, policy: ClaimPolicy = CLAIMS, now: datetime | None = None) -> int:
    """Extend every claim the reviewer holds by a full lease; returns how many."""
    with catalog.engine.begin() as connection:
        return connection.execute(_renew_stmt(), {"who": reviewer, "until": (now or utcnow()) + policy.lease}).rowcount


def release_claims(catalog: Catalog, reviewer: str, patch_ids: Collection[int] | None = None) -> int:
    """Give back the reviewer's claims (all of them, or on ``patch_ids``): on quit, on a skip, when
    switching to another queue. Returns how many were released."""
    stmt = delete(Claim).where(Claim.reviewer == reviewer)
    if patch_ids is not None:
        if not patch_ids:
            return 0
        stmt = stmt.where(Claim.patch_id.in_(list(patch_ids)))
    with catalog.engine.begin() as connection:
        return connection.execute(stmt).rowcount


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


# -- the statements of a claim, built once (the database's statement cache then reuses them) -------

_REVIEWER: BindParameter[str] = bindparam("who")
_VERSION: BindParameter[int] = bindparam("version")
_NOW: BindParameter[datetime] = bindparam("now")
_EXCLUDE: BindParameter[list[int]] = bindparam("exclude", expanding=True)


@cache
def _held_stmt(by_slide: bool):
    """The queue's patches the reviewer holds and may still take, in queue order (read from the
    reviewer's few claim rows, not by walking the queue)."""
    stmt = (select(ReviewQueueItem.patch_id)
            .join(Claim, Claim.patch_id == ReviewQueueItem.patch_id)
            .where(Claim.reviewer == _REVIEWER, ReviewQueueItem.model_version_id == _VERSION,
                   claimable_by(_REVIEWER, _NOW), ReviewQueueItem.patch_id.not_in(_EXCLUDE)))
    if by_slide:
        stmt = stmt.join(Patch, Patch.id == ReviewQueueItem.patch_id).where(Patch.slide_id == bindparam("slide"))
    return stmt.order_by(ReviewQueueItem.rank, ReviewQueueItem.id)


@cache
def _candidates_stmt(by_slide: bool):
    """The next patches in queue order the reviewer may take and does not hold yet."""
    stmt = (select(ReviewQueueItem.patch_id)
            .where(ReviewQueueItem.model_version_id == _VERSION, claimable_by(_REVIEWER, _NOW),
                   ~held_by(_REVIEWER), ReviewQueueItem.patch_id.not_in(_EXCLUDE)))
    if by_slide:
        stmt = stmt.join(Patch, Patch.id == ReviewQueueItem.patch_id).where(Patch.slide_id == bindparam("slide"))
    # PostgreSQL: rows another claim is taking right now are skipped rather than waited for
    # (SQLite has no row locks and ignores this: its claims run one at a time).
    return (stmt.order_by(ReviewQueueItem.rank, ReviewQueueItem.id).limit(bindparam("limit", type_=Integer))
            .with_for_update(skip_locked=True, of=ReviewQueueItem))


@cache
def _renew_stmt():
    return update(Claim).where(Claim.reviewer == _REVIEWER).values(expires_at=bindparam("until"))


@cache
def _drop_judged_stmt():
    return delete(Claim).where(Claim.reviewer == _REVIEWER, read_by(_REVIEWER, Claim.patch_id))


@cache
def _upsert_stmt(dialect: str):
    """Claim one patch unless someone else holds a live claim on it: insert, and on conflict take
    the row over only when its lease has expired or it is already the reviewer's."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise ClaimsUnsupported(f"claims need SQLite or PostgreSQL; this catalog is on {dialect}")
    stmt = insert(Claim).values(patch_id=bindparam("patch"), reviewer=_REVIEWER, model_version_id=_VERSION,
                                claimed_at=_NOW, expires_at=bindparam("until"))
    return stmt.on_conflict_do_update(
        index_elements=[Claim.patch_id],
        set_={"reviewer": stmt.excluded.reviewer, "model_version_id": stmt.excluded.model_version_id,
              "claimed_at": stmt.excluded.claimed_at, "expires_at": stmt.excluded.expires_at},
        where=or_(Claim.expires_at <= _NOW, Claim.reviewer == _REVIEWER),
    )
