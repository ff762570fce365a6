"""Which reviewed patches an export contains, and with which label.

Verdicts are append-only rows; undone rows never count. Every mode first keeps each reviewer's
latest read of a patch (a reviewer who changed their mind counts once, with the new verdict),
then combines reviewers by the one rule of ``wsireview.catalog.verdicts``:

- ``adjudicated`` (the default once any patch has an adjudication): the adjudicator's decision,
  else the majority;
- ``majority`` (the default before): the label most reviewers gave; a tie drops the patch.
- ``unanimous``: the label all reviewers gave; any disagreement drops the patch.
- ``latest``: the most recent reviewer's verdict wins.

``--reviewer`` and ``--since`` choose reads; an adjudication decides the label of a patch that
still has a read after them.

``unsure`` verdicts are abstentions unless ``include_unsure``: they are removed before the vote, so
one reviewer's "unsure" neither blocks nor breaks a tie. Every dropped patch is counted under the
rule that dropped it, so an export always says what it left out and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import exists, select

from wsireview.catalog import ADJUDICATION, UNSURE, VERDICTS, Catalog, Patch, Review
from wsireview.catalog.score_files import PatchScore, version_scores
from wsireview.catalog.verdicts import (
    ADJUDICATED,
    CONSENSUS_MODES,
    NO_VERDICT_DISAGREE,
    NO_VERDICT_TIE,
    NO_VERDICT_UNSURE,
    Vote,
    as_utc,
    decide,
    latest_per_reviewer,
)
from wsireview.export.atomic import ExportError

__all__ = ["CONSENSUS_MODES", "Vote", "Selection", "LabeledPatch", "SelectionResult", "default_consensus",
           "label_patches", "select_patches", "latest_per_reviewer", "as_utc"]

# Drop reasons, in the order the rules apply (the order the report prints them).
DROP_UNDONE = "undone"
DROP_REVIEWER = "other reviewers"
DROP_SINCE = "before --since"
DROP_UNSURE = NO_VERDICT_UNSURE
DROP_TIE = NO_VERDICT_TIE
DROP_DISAGREE = NO_VERDICT_DISAGREE
DROP_LABEL = "label not selected"
DROP_UNREADABLE = "slide unreadable"
DROP_ORDER = (DROP_UNDONE, DROP_REVIEWER, DROP_SINCE, DROP_UNSURE, DROP_TIE, DROP_DISAGREE, DROP_LABEL,
              DROP_UNREADABLE)


@dataclass(frozen=True)
class Selection:
    """What to export: filters and the consensus rule (see :func:`default_consensus`)."""

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
    votes: tuple[Vote, ...]  # every counting read (all reviewers; unsure ones only with include_unsure)
    model_version_id: int | None  # the model that flagged it: of the latest vote for the label
    attention: float | None = None
    attention_rank: int | None = None
    probability: float | None = None
    adjudication: Vote | None = None  # the adjudicator's decision that gave the label, if one did

    @property
    def supporters(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.verdict == self.label)

    @property
    def reviewers(self) -> tuple[str, ...]:
        return tuple(sorted({v.reviewer for v in self.supporters}))

    @property
    def reviewed_at(self) -> datetime:
        decided = self.supporters + ((self.adjudication,) if self.adjudication else ())
        return max(v.created_at for v in decided)


@dataclass
class SelectionResult:
    patches: list[LabeledPatch] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    reviewed: int = 0  # patches with any verdict row at all


def default_consensus(catalog: Catalog) -> str:
    """``adjudicated`` once any patch has a standing adjudication, else ``majority``."""
    with catalog.session() as session:
        adjudicated = session.scalar(select(exists().where(Review.role == ADJUDICATION, Review.undone_at.is_(None))))
    return ADJUDICATED if adjudicated else "majority"


def _latest(votes: list[Vote]) -> Vote:
    return max(votes, key=lambda v: (v.created_at, v.review_id))


def label_patches(reviews_by_patch: dict[int, list[tuple[Vote, bool]]], selection: Selection,
                  adjudications: dict[int, Vote] | None = None
                  ) -> tuple[dict[int, tuple[str, list[Vote]]], Counter]:
    """Apply the rules to ``{patch: [(vote, undone), ...]}`` (reads) and ``{patch: standing
    adjudication}``; returns labels and drop counts."""
    adjudications = adjudications or {}
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
        label, reason = decide(votes, adjudications.get(patch_id), selection.consensus, selection.include_unsure)
        if label is None:
            dropped[reason] += 1
            continue
        if selection.labels and label not in selection.labels:
            dropped[DROP_LABEL] += 1
            continue
        labels[patch_id] = (label, [v for v in votes if selection.include_unsure or v.verdict != UNSURE])
    return labels, dropped


def select_patches(catalog: Catalog, selection: Selection) -> SelectionResult:
    """Read the verdicts, apply the rules, and join patch geometry and the flagging model's scores."""
    with catalog.session() as session:
        rows = session.execute(
            select(Review.id, Review.patch_id, Review.reviewer, Review.verdict, Review.created_at,
                   Review.model_version_id, Review.undone_at, Review.role).order_by(Review.id)
        ).all()
        by_patch: dict[int, list[tuple[Vote, bool]]] = {}
        adjudications: dict[int, Vote] = {}
        for rid, pid, reviewer, verdict, created, mvid, undone, role in rows:
            vote = Vote(rid, reviewer, verdict, as_utc(created), mvid)
            if role == ADJUDICATION:
                if undone is None:
                    adjudications[pid] = vote  # id order: the latest standing one decides
                continue
            by_patch.setdefault(pid, []).append((vote, undone is not None))
        labels, dropped = label_patches(by_patch, selection, adjudications)
        if selection.consensus != ADJUDICATED:
            adjudications = {}
        result = SelectionResult(dropped=dropped, reviewed=len(by_patch))
        if not labels:
            return result
        ids = sorted(labels)
        geometry = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for p in session.scalars(select(Patch).where(Patch.id.in_(chunk))):
                geometry[p.id] = (p.slide_id, p.x, p.y, p.size)
        flags = {pid: _latest([v for v in votes if v.verdict == label] + ([adjudications[pid]] if pid in adjudications else []))
                 for pid, (label, votes) in labels.items()}
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
            adjudication=adjudications.get(pid),
        ))
    return result
