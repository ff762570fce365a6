"""What the model learns from: slide labels and the instance labels that reviews amount to.

A patch's instance label is its verdict under the one rule (``wsireview.catalog.verdicts.decide``):
the adjudicator's decision when there is one, else the majority of each reviewer's latest verdict
(unsure abstains, a tie gives no label). Lesion is 1, not lesion 0; a patch whose verdict is
artifact leaves the bags of every later version.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from sqlalchemy import func, select

from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, READY, Catalog, Patch, Review, Slide
from wsireview.catalog.verdicts import counting, patch_verdicts

# Offered in the app when no slide carries a label yet: `retrain`'s default positive class and a negative.
SUGGESTED_LABELS = ("lesion", "normal")


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
        return set(session.scalars(select(Review.patch_id).where(counting()).distinct()))


def verdicts(catalog: Catalog) -> dict[int, str]:
    """``{patch_id: verdict}`` of every patch that has one under the one rule (adjudicated, else majority)."""
    with catalog.session() as session:
        return patch_verdicts(session)


def instance_targets(catalog: Catalog) -> dict[int, int]:
    """``{patch_id: 1 (lesion) | 0 (not lesion)}`` from the patches' verdicts."""
    return {pid: int(v == LESION) for pid, v in verdicts(catalog).items() if v in (LESION, NOT_LESION)}


def record_label(slide: Slide, label: str | None, set_by: str) -> None:
    """Set (or clear, with None) a slide's label with who set it and when: the one rule every
    writer of labels follows (the app, `add --labels`)."""
    label = label.strip() if label else None
    slide.label = label or None
    slide.label_set_by = set_by
    slide.label_set_at = datetime.now(timezone.utc)


def set_slide_label(catalog: Catalog, slide_id: int, label: str | None, set_by: str) -> None:
    """Set or clear one slide's label and commit it; the next `retrain` learns from it."""
    with catalog.session() as session:
        slide = session.get(Slide, slide_id)
        if slide is None:
            raise ValueError(f"no slide with id {slide_id}")
        record_label(slide, label, set_by)


def known_labels(catalog: Catalog) -> list[tuple[str, int]]:
    """``[(label, slides carrying it)]``, most used first; while the cohort has fewer than two
    labels, the suggestions follow with a count of 0 (a person labelling the first slides sees what
    `retrain` expects, and can give the second class without typing it)."""
    with catalog.session() as session:
        rows = session.execute(
            select(Slide.label, func.count()).where(Slide.label.is_not(None), Slide.label != "")
            .group_by(Slide.label).order_by(func.count().desc(), Slide.label)
        ).all()
    known = [(label, int(n)) for label, n in rows if label is not None]  # (the query has none)
    if len(known) < 2:
        used = {label.casefold() for label, _ in known}
        known += [(label, 0) for label in SUGGESTED_LABELS if label.casefold() not in used]
    return known


def labelled_slides(catalog: Catalog) -> int:
    """Ready slides that carry a label: with none (and no verdicts) there is nothing to train on."""
    with catalog.session() as session:
        return int(session.scalar(
            select(func.count()).select_from(Slide).where(Slide.status == READY, Slide.label.is_not(None), Slide.label != "")
        ) or 0)


LABEL_FIRST = ("no slide has a label yet: label some slides first (at least one {positive} slide and one "
               "other), in the app (`wsireview`, select a slide, press `l`) or with "
               "`wsireview add SLIDES --labels labels.csv`; then `wsireview retrain`.")


def needs_labels(catalog: Catalog) -> bool:
    """True while no ready slide has a label and no patch has a lesion/not-lesion verdict: the
    first step is then labelling slides (retraining would have nothing to learn from)."""
    return labelled_slides(catalog) == 0 and not instance_targets(catalog)


def label_first_step(positive: str = "lesion") -> str:
    """What to do first in a cohort without labels (the CLI's hints and the app say the same)."""
    return LABEL_FIRST.format(positive=positive)


def nothing_queued_step(catalog: Catalog) -> str:
    """What to do when there is nothing to review: label slides first, or retrain."""
    if needs_labels(catalog):
        return ("No slide has a label yet: on the slides screen (esc) press `l` on a slide to label it "
                "(lesion or normal, at least one of each), then retrain (ctrl+p).")
    return "Retrain (ctrl+p, or `wsireview retrain`) to train a model and queue patches."


def artifact_patches(catalog: Catalog) -> set[int]:
    """Patches whose verdict is artifact: out of every later version's bags."""
    return {pid for pid, v in verdicts(catalog).items() if v == ARTIFACT}


def slides_of(catalog: Catalog, patch_ids) -> set[int]:
    """The slides the patches ``patch_ids`` belong to (asked 500 ids at a time)."""
    ids = sorted(int(p) for p in patch_ids)
    found: set[int] = set()
    with catalog.session() as session:
        for start in range(0, len(ids), 500):
            found.update(session.scalars(select(Patch.slide_id).where(Patch.id.in_(ids[start : start + 500])).distinct()))
    return found
