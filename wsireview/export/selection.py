"""Which reviewed patches an export contains, and with which label.

Verdicts are append-only rows; undone rows never count. Every mode first keeps each reviewer's
latest verdict on a patch (a reviewer who changed their mind counts once, with the new verdict),
then combines reviewers:

- ``majority`` (the default): the label most reviewers gave; a tie drops the patch.
- ``unanimous``: the label all reviewers gave; any disagreement drops the patch.
- ``latest``: the most recent reviewer's verdict wins.

``unsure`` verdicts are abstentions unless ``include_unsure``: they are removed before the vote, so
one reviewer's "unsure" neither blocks nor breaks a tie. Every dropped patch is counted under the
rule that dropped it, so an export always says what it left out and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import select

from wsireview.catalog import UNSURE, VERDICTS, Catalog, Patch, Review
from wsireview.catalog.score_files import PatchScore, version_scores
from wsireview.export.atomic import ExportError

CONSENSUS_MODES = ("majority", "unanimous", "latest")

# Drop reasons, in the order the rules apply (the order the report prints them).
DROP_UNDONE = "undone"
DROP_REVIEWER = "other reviewers"
DROP_SINCE = "before --since"
DROP_UNSURE = "unsure"
DROP_TIE = "tie"
DROP_DISAGREE = "disagreement"
DROP_LABEL = "label not selected"
DROP_UNREADABLE = "slide unreadable"
DROP_ORDER = (DROP_UNDONE, DROP_REVIEWER, DROP_SINCE, DROP_UNSURE, DROP_TIE, DROP_DISAGREE, DROP_LABEL,
              DROP_UNREADABLE)


@dataclass(frozen=True)
class Vote:
    """One counting verdict: a reviewer's latest on a patch."""

    review_id: int
    reviewer: str
    verdict: str
    created_at: datetime
    model_version_id: int | None


@dataclass(frozen=True)
class Selection:
    """What to export: filters and the consensus rule."""

    consensus: str = "majority"
    labels: tuple[str, ...] | None = None  # None: every label
    reviewers: tuple[str, ...] | None = None  # None: every reviewer
    since: datetime | None = None
    include_unsure: bool = False

    def __post_init__(self) -> None:
        if self.consensus not in CONSENSUS_MODES:
            raise ExportError(f"unknown consensus rule {self.consensus!r}: choose {', '.join(CONSENSUS_MODES)}")
        for label in self.labels or ():
            if label not in VERDICTS:
                raise ExportError(f"unknown verdict label {label!r}: choose {', '.join(VERDICTS)}")


@dataclass(frozen=True)
class LabeledPatch:
    """A patch with its consensus label, the votes behind it and the flagging model's scores."""

    patch_id: int
    slide_id: int
    x: int
    y: int
    size: int
    label: str
    votes: tuple[Vote, ...]  # every counting vote (all reviewers)
    model_version_id: int | None  # the model that flagged it: of the latest vote for the label
    attention: float | None = None
    attention_rank: int | None = None
    probability: float | None = None

    @property
    def supporters(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.verdict == self.label)

    @property
    def reviewers(self) -> tuple[str, ...]:
        return tuple(sorted({v.reviewer for v in self.supporters}))

    @property
    def reviewed_at(self) -> datetime:
        return max(v.created_at for v in self.supporters)


@dataclass
class SelectionResult:
    patches: list[LabeledPatch] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    reviewed: int = 0  # patches with any verdict row at all


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes that were written as UTC; make every moment aware."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _latest(votes: list[Vote]) -> Vote:
    return max(votes, key=lambda v: (v.created_at, v.review_id))


def decide(votes: list[Vote], consensus: str) -> tuple[str | None, str | None]:
    """The label from reviewers' latest votes, or ``(None, drop reason)``."""
    if consensus == "latest":
        return _latest(votes).verdict, None
    counts = Counter(v.verdict for v in votes).most_common()
    if consensus == "unanimous":
        return (counts[0][0], None) if len(counts) == 1 else (None, DROP_DISAGREE)
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None, DROP_TIE
    return counts[0][0], None


def latest_per_reviewer(rows: list[Vote]) -> list[Vote]:
    """Each reviewer's most recent vote (ids break ties in time: the table is append-only)."""
    latest: dict[str, Vote] = {}
    for vote in rows:
        held = latest.get(vote.reviewer)
        if held is None or (vote.created_at, vote.review_id) > (held.created_at, held.review_id):
            latest[vote.reviewer] = vote
    return list(latest.values())


def label_patches(reviews_by_patch: dict[int, list[tuple[Vote, bool]]], selection: Selection
                  ) -> tuple[dict[int, tuple[str, list[Vote]]], Counter]:
    """Apply the rules to ``{patch: [(vote, undone), ...]}``; returns labels and drop counts."""
    dropped: Counter = Counter()
    labels: dict[int, tuple[str, list[Vote]]] = {}
    reviewers = set(selection.reviewers) if selection.reviewers else None
    since = as_utc(selection.since) if selection.since else None
    for patch_id, rows in reviews_by_patch.items():
        active = [vote for vote, undone in rows if not undone]
        if not active:
            dropped[DROP_UNDONE] += 1
            continue
        if reviewers is not None:
            active = [v for v in active if v.reviewer in reviewers]
            if not active:
                dropped[DROP_REVIEWER] += 1
                continue
        if since is not None:
            active = [v for v in active if v.created_at >= since]
            if not active:
                dropped[DROP_SINCE] += 1
                continue
        votes = latest_per_reviewer(active)
        if not selection.include_unsure:
            votes = [v for v in votes if v.verdict != UNSURE]
            if not votes:
                dropped[DROP_UNSURE] += 1
                continue
        label, reason = decide(votes, selection.consensus)
        if label is None:
            dropped[reason] += 1
            continue
        if selection.labels and label not in selection.labels:
            dropped[DROP_LABEL] += 1
            continue
        labels[patch_id] = (label, votes)
    return labels, dropped


def select_patches(catalog: Catalog, selection: Selection) -> SelectionResult:
    """Read the verdicts, apply the rules, and join patch geometry and the flagging model's scores."""
    with catalog.session() as session:
        rows = session.execute(
            select(Review.id, Review.patch_id, Review.reviewer, Review.verdict, Review.created_at,
                   Review.model_version_id, Review.undone_at).order_by(Review.id)
        ).all()
        by_patch: dict[int, list[tuple[Vote, bool]]] = {}
        for rid, pid, reviewer, verdict, created, mvid, undone in rows:
            by_patch.setdefault(pid, []).append(
                (Vote(rid, reviewer, verdict, as_utc(created), mvid), undone is not None))
        labels, dropped = label_patches(by_patch, selection)
        result = SelectionResult(dropped=dropped, reviewed=len(by_patch))
        if not labels:
            return result
        ids = sorted(labels)
        geometry = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for p in session.scalars(select(Patch).where(Patch.id.in_(chunk))):
                geometry[p.id] = (p.slide_id, p.x, p.y, p.size)
        flags = {pid: _latest([v for v in votes if v.verdict == label]) for pid, (label, votes) in labels.items()}
    # keyed by (model version, patch): a flag without a model version (or whose version's scores
    # were pruned) finds nothing
    scores: dict[tuple[int | None, int], PatchScore] = {}
    for mvid in sorted({f.model_version_id for f in flags.values() if f.model_version_id is not None}):
        version = version_scores(catalog, mvid)
        if version is not None:
            found = version.lookup(pid for pid, f in flags.items() if f.model_version_id == mvid)
            scores.update(((mvid, pid), score) for pid, score in found.items())
    for pid in ids:
        label, votes = labels[pid]
        flag = flags[pid]
        score = scores.get((flag.model_version_id, pid))
        slide_id, x, y, size = geometry[pid]
        result.patches.append(LabeledPatch(
            patch_id=pid, slide_id=slide_id, x=x, y=y, size=size, label=label,
            votes=tuple(sorted(votes, key=lambda v: v.reviewer)), model_version_id=flag.model_version_id,
            attention=None if score is None else score.attention,
            attention_rank=None if score is None else score.attention_rank,
            probability=None if score is None else score.probability,
        ))
    return result
