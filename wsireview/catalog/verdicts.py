"""The verdict of a patch, and who may judge a queued patch: the two rules everyone calls.

A patch collects **reads** (each reviewer's latest review of role ``read`` that is not undone: a
reviewer who changed their mind counts once, with the new verdict) and at most one standing
**adjudication** (the latest review of role ``adjudication`` that is not undone). Its verdict:

- ``adjudicated`` (what training, `status` and the apps use): the adjudication when there is one,
  else ``majority``;
- ``majority``: the verdict most reviewers gave; ``unsure`` abstains (unless ``include_unsure``),
  and a tie gives no verdict;
- ``unanimous``: the verdict all reviewers gave; any disagreement gives none;
- ``latest``: the most recent read wins.

A patch whose reads disagree (two different verdicts other than ``unsure``), or whose every read
is ``unsure``, waits for an adjudicator until one decides.

A queue item asks for ``reads`` different reviewers (2 for a blinded double read). Reviewer R may
judge it while R has not and fewer than ``reads`` reviewers have (:func:`may_judge`, a condition
the database evaluates; ``claims.claimable_by`` adds that nobody else holds it); while R may, the
verdicts others gave it are hidden from R (:func:`open_patches`), so a second read is blind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from wsireview.catalog.models import ADJUDICATION, READ, READY, UNSURE, ModelVersion, Review, ReviewQueueItem

ADJUDICATED = "adjudicated"
CONSENSUS_MODES = (ADJUDICATED, "majority", "unanimous", "latest")

# Why a patch has no verdict (export reports its drops under these names).
NO_VERDICT_UNSURE = "unsure"
NO_VERDICT_TIE = "tie"
NO_VERDICT_DISAGREE = "disagreement"


def counting(role: str = READ):
    """The condition a review counts under: of ``role``, not undone, and its reviewer's latest of that
    role on the patch (a verdict they changed later is superseded)."""
    newer = aliased(Review)
    return and_(
        Review.undone_at.is_(None),
        Review.role == role,
        ~exists().where(newer.patch_id == Review.patch_id, newer.reviewer == Review.reviewer,
                        newer.role == Review.role, newer.undone_at.is_(None), newer.id > Review.id),
    )


@dataclass(frozen=True)
class Vote:
    """One counting review: a reviewer's latest read of a patch, or an adjudication."""

    review_id: int
    reviewer: str
    verdict: str
    created_at: datetime
    model_version_id: int | None


@dataclass(frozen=True)
class PatchReads:
    """What the catalog holds on one patch: the reads by reviewer and the standing adjudication."""

    reads: tuple[Vote, ...]
    adjudication: Vote | None = None

    @property
    def readers(self) -> frozenset[str]:
        return frozenset(v.reviewer for v in self.reads)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes that were written as UTC; make every moment aware."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _newest(votes: Iterable[Vote]) -> Vote:
    return max(votes, key=lambda v: (v.created_at, v.review_id))


def latest_per_reviewer(votes: Iterable[Vote]) -> list[Vote]:
    """Each reviewer's most recent vote (ids break ties in time: the table is append-only)."""
    latest: dict[str, Vote] = {}
    for vote in votes:
        held = latest.get(vote.reviewer)
        if held is None or (vote.created_at, vote.review_id) > (held.created_at, held.review_id):
            latest[vote.reviewer] = vote
    return list(latest.values())


def decide(reads: Collection[Vote], adjudication: Vote | None = None, consensus: str = ADJUDICATED,
           include_unsure: bool = False) -> tuple[str | None, str | None]:
    """The verdict of a patch from its reads (one per reviewer) and adjudication: ``(verdict, None)``,
    or ``(None, why there is none)``. THE rule: training, export, `status` and the apps call it."""
    if consensus == ADJUDICATED and adjudication is not None:
        if adjudication.verdict == UNSURE and not include_unsure:
            return None, NO_VERDICT_UNSURE
        return adjudication.verdict, None
    votes = [v for v in reads if include_unsure or v.verdict != UNSURE]
    if not votes:
        return None, NO_VERDICT_UNSURE
    if consensus == "latest":
        return _newest(votes).verdict, None
    counts = Counter(v.verdict for v in votes).most_common()
    if consensus == "unanimous":
        return (counts[0][0], None) if len(counts) == 1 else (None, NO_VERDICT_DISAGREE)
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None, NO_VERDICT_TIE
    return counts[0][0], None


DISPUTED = "disputed"  # what the apps show for a patch whose reads tie and no adjudicator has decided


def shown_verdict(patch: PatchReads) -> str | None:
    """The patch's verdict as the apps show it: :func:`decide`'s, else ``unsure`` when every read was
    unsure, else ``disputed`` (the reads tie); None without any read."""
    verdict, why = decide(patch.reads, patch.adjudication)
    if verdict is not None or not (patch.reads or patch.adjudication):
        return verdict
    return UNSURE if why == NO_VERDICT_UNSURE else DISPUTED


def needs_adjudication(patch: PatchReads) -> bool:
    """The reads disagree (two verdicts other than unsure), or everyone who judged it was unsure,
    and no adjudicator has decided yet."""
    if patch.adjudication is not None or not patch.reads:
        return False
    verdicts = {v.verdict for v in patch.reads}
    return len(verdicts - {UNSURE}) >= 2 or verdicts == {UNSURE}


def awaiting_adjudication(session: Session, patches: Mapping[int, PatchReads]) -> set[int]:
    """The patches of ``patches`` an adjudicator should decide: :func:`needs_adjudication`, and every
    read in. A double read still waiting for its second reader in the latest queue is not disputed
    yet: its one reader may have been unsure, and an adjudicator would see that read before the
    second reader gives theirs."""
    candidates = [pid for pid, patch in patches.items() if needs_adjudication(patch)]
    if not candidates:
        return set()
    latest = session.scalar(select(func.max(ModelVersion.id)).where(ModelVersion.status == READY))
    waiting = open_patches(session, latest, None, candidates) if latest is not None else set()
    return set(candidates) - waiting


def load_reads(session: Session, patch_ids: Collection[int] | None = None) -> dict[int, PatchReads]:
    """``{patch_id: PatchReads}`` for every patch with a counting read or adjudication (or just ``patch_ids``)."""
    stmt = (select(Review.id, Review.patch_id, Review.reviewer, Review.verdict, Review.created_at,
                   Review.model_version_id, Review.role)
            .where(Review.undone_at.is_(None)).order_by(Review.id))
    rows: list[Any] = []
    if patch_ids is None:
        rows = list(session.execute(stmt).all())
    else:
        ids = list(patch_ids)
        for start in range(0, len(ids), 500):  # keep IN lists short for SQLite
            rows += session.execute(stmt.where(Review.patch_id.in_(ids[start:start + 500]))).all()
    reads: dict[int, dict[str, Vote]] = {}
    adjudications: dict[int, Vote] = {}
    for rid, pid, reviewer, verdict, created, mvid, role in rows:
        vote = Vote(rid, reviewer, verdict, as_utc(created), mvid)
        if role == ADJUDICATION:
            adjudications[pid] = vote  # rows come in id order: the latest stands
        else:
            reads.setdefault(pid, {})[reviewer] = vote
    return {
        pid: PatchReads(tuple(sorted(reads.get(pid, {}).values(), key=lambda v: v.reviewer)), adjudications.get(pid))
        for pid in reads.keys() | adjudications.keys()
    }


def patch_verdicts(session: Session, patch_ids: Collection[int] | None = None) -> dict[int, str]:
    """``{patch_id: verdict}`` under :func:`decide` for patches that have one (ties and all-unsure left out)."""
    out = {}
    for pid, patch in load_reads(session, patch_ids).items():
        verdict, _ = decide(patch.reads, patch.adjudication)
        if verdict is not None:
            out[pid] = verdict
    return out


def read_by(reviewer: Any, patch: Any = ReviewQueueItem.patch_id) -> ColumnElement[bool]:
    """The reviewer has a standing read of the patch (an adjudication is not a read)."""
    mine = aliased(Review, name="own_read")
    return exists().where(mine.patch_id == patch, mine.reviewer == reviewer, mine.role == READ,
                          mine.undone_at.is_(None))


def readers(patch: Any = ReviewQueueItem.patch_id) -> ScalarSelect[int]:
    """How many different reviewers have a standing read of the patch."""
    read = aliased(Review, name="any_read")
    return (select(func.count(func.distinct(read.reviewer)))
            .where(read.patch_id == patch, read.role == READ, read.undone_at.is_(None)).scalar_subquery())


def may_judge(reviewer: Any | None, patch: Any = ReviewQueueItem.patch_id,
              reads_required: Any = ReviewQueueItem.reads) -> ColumnElement[bool]:
    """May ``reviewer`` judge a queue item that asks for ``reads_required`` different reviewers? Yes
    while they have not read it and fewer than ``reads_required`` reviewers have (``reviewer`` None:
    anyone new). THE read rule of the queue, as a condition on the queue item's row: who may take it
    (``claims.claimable_by`` adds the claims), what a queue shows, the counts and the blinding call it."""
    still_open = readers(patch) < reads_required
    return still_open if reviewer is None else and_(~read_by(reviewer, patch), still_open)


def open_patches(session: Session, model_version_id: int, reviewer: str | None,
                 patch_ids: Collection[int] | None = None) -> set[int]:
    """Patches of a version's queue that ``reviewer`` may still judge: what others said of them is
    hidden from ``reviewer`` (a double read stays blind)."""
    stmt = select(ReviewQueueItem.patch_id).where(ReviewQueueItem.model_version_id == model_version_id,
                                                  may_judge(reviewer))
    if patch_ids is None:
        return set(session.scalars(stmt))
    ids, out = list(patch_ids), set[int]()
    for start in range(0, len(ids), 500):  # keep IN lists short for SQLite
        out.update(session.scalars(stmt.where(ReviewQueueItem.patch_id.in_(ids[start:start + 500]))))
    return out


def second_reads_waiting(session: Session, model_version_id: int) -> list[int]:
    """Patches of a version's queue that some reviewers have judged but that still wait for another
    (a double read half done), in queue order: the next round queues them again, so a retrain in the
    middle of a session does not drop the second read."""
    items = session.execute(
        select(ReviewQueueItem.patch_id, ReviewQueueItem.reads)
        .where(ReviewQueueItem.model_version_id == model_version_id, ReviewQueueItem.reads > 1)
        .order_by(ReviewQueueItem.rank, ReviewQueueItem.id)
    ).all()
    reads = load_reads(session, [pid for pid, _ in items])
    return [pid for pid, n in items
            if pid in reads and reads[pid].adjudication is None and 0 < len(reads[pid].readers) < n]
