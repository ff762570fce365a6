"""What the model learns from: slide labels and the instance labels that reviews amount to.

A patch's instance label comes from the reviews that count (not undone): each reviewer's latest
verdict, then the majority of lesion against not-lesion votes; unsure and artifact are no vote,
and a tie gives no label. A patch is an artifact when artifact is its most common latest verdict
(more votes than lesion and than not lesion): it leaves the bags of every later version.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from sqlalchemy import select

from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, READY, Catalog, Review, Slide


def slide_targets(catalog: Catalog, positive: str) -> tuple[dict[int, int], dict[int, str | None]]:
    """``({slide_id: 1|0} for labelled slides, {slide_id: label string or None})`` of ready slides."""
    with catalog.session() as session:
        rows = session.execute(select(Slide.id, Slide.label).where(Slide.status == READY)).all()
    labels = {sid: (label.strip() if label and label.strip() else None) for sid, label in rows}
    targets = {sid: int(label == positive) for sid, label in labels.items() if label is not None}
    return targets, labels


def similar_labels(labels: Iterable[str]) -> list[tuple[str, ...]]:
    """Groups of spellings that differ only by case or whitespace ("Lesion", "lesion"): the model takes
    them as different classes, so a slide labelled "Lesion" is negative under ``--positive lesion``."""
    groups: dict[str, set[str]] = {}
    for label in labels:
        groups.setdefault("".join(label.split()).casefold(), set()).add(label)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def reviewed_patches(catalog: Catalog) -> set[int]:
    """Every patch with at least one review that counts (any verdict): never queued again."""
    with catalog.session() as session:
        return set(session.scalars(select(Review.patch_id).where(Review.undone_at.is_(None)).distinct()))


def _latest_votes(catalog: Catalog) -> dict[int, Counter]:
    """``{patch_id: Counter of verdicts}`` over each reviewer's latest verdict that counts."""
    with catalog.session() as session:
        rows = session.execute(
            select(Review.patch_id, Review.reviewer, Review.verdict)
            .where(Review.undone_at.is_(None))
            .order_by(Review.id)
        ).all()
    latest: dict[tuple[int, str], str] = {}
    for patch_id, reviewer, verdict in rows:
        latest[(patch_id, reviewer)] = verdict
    votes: dict[int, Counter] = {}
    for (patch_id, _reviewer), verdict in latest.items():
        votes.setdefault(patch_id, Counter())[verdict] += 1
    return votes


def instance_targets(catalog: Catalog) -> dict[int, int]:
    """``{patch_id: 1 (lesion) | 0 (not lesion)}`` from the reviews that count."""
    targets: dict[int, int] = {}
    for patch_id, counter in _latest_votes(catalog).items():
        if counter[LESION] != counter[NOT_LESION]:
            targets[patch_id] = int(counter[LESION] > counter[NOT_LESION])
    return targets


def artifact_patches(catalog: Catalog) -> set[int]:
    """Patches whose most common latest verdict is artifact: out of every later version's bags."""
    return {patch_id for patch_id, counter in _latest_votes(catalog).items()
            if counter[ARTIFACT] > max(counter[LESION], counter[NOT_LESION])}
