"""The model part of `wsireview status --json`."""

from __future__ import annotations

from sqlalchemy import func, select

from wsireview.catalog import Catalog, ModelVersion, ReviewQueueItem, Slide, SlidePrediction
from wsireview.catalog.queries import latest_model_version
from wsireview.catalog.score_files import SCORES_PRUNED, scores_state
from wsireview.catalog.verdicts import open_patches
from wsireview.learn.labels import instance_targets


def queued_patches(catalog: Catalog, model_version_id: int) -> int:
    """Patches in a version's queue that still wait for a read (a double read until its second)."""
    with catalog.session() as session:
        return len(open_patches(session, model_version_id, None))


def model_status(catalog: Catalog) -> dict:
    """Latest ready model version: id, parent, encoder, metrics, label counts, queued patches."""
    version = latest_model_version(catalog)
    with catalog.session() as session:
        versions = int(session.scalar(select(func.count()).select_from(ModelVersion)) or 0)
    if version is None:
        return {"id": None, "versions": 0, "queued": 0}
    return {
        "id": version.id,
        "parent_id": version.parent_id,
        "encoder": version.encoder,
        "positive_label": version.positive_label,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "metrics": version.metrics,
        "label_counts": version.label_counts,
        "checkpoint": version.checkpoint_path,
        "scores": scores_state(catalog, version.scores_path),
        "scores_pruned": _pruned_versions(catalog),
        "versions": versions,
        "queued": queued_patches(catalog, version.id),
        "queue_size": _queue_size(catalog, version.id),
        "spec": (version.params or {}).get("spec"),
        "queue_yield": _queue_yields(catalog),
        "slides": slide_predictions(catalog, version.id),
    }


def queue_yield(catalog: Catalog, model_version_id: int, targets: dict[int, int] | None = None
                ) -> dict[str, dict[str, int]]:
    """Per reason a version queued patches for (exploit, top-attention, uncertain, diverse, random):
    how many it queued, how many have a lesion/not-lesion verdict now, and how many are lesion.

    What each way of choosing patches finds: the numbers the next round's choices can learn from,
    and what `evaluate` and the model screen show.
    """
    with catalog.session() as session:
        rows = session.execute(select(ReviewQueueItem.patch_id, ReviewQueueItem.reason)
                               .where(ReviewQueueItem.model_version_id == model_version_id)).all()
    targets = instance_targets(catalog) if targets is None else targets
    out: dict[str, dict[str, int]] = {}
    for patch_id, reason in rows:
        entry = out.setdefault(reason, {"queued": 0, "reviewed": 0, "lesion": 0})
        entry["queued"] += 1
        if patch_id in targets:
            entry["reviewed"] += 1
            entry["lesion"] += targets[patch_id]
    return out


def slide_predictions(catalog: Catalog, model_version_id: int) -> list[dict]:
    """A version's prediction of every slide: the combined probability, its two parts, what drove
    it, and whether an unlabelled slide is a candidate positive (a confirmed lesion patch)."""
    with catalog.session() as session:
        rows = session.execute(
            select(Slide.name, Slide.label, SlidePrediction.probability, SlidePrediction.bag_probability,
                   SlidePrediction.evidence, SlidePrediction.driver)
            .join(Slide, Slide.id == SlidePrediction.slide_id)
            .where(SlidePrediction.model_version_id == model_version_id).order_by(Slide.name)
        ).all()
    return [{"name": name, "label": label, "probability": p, "bag_probability": bag, "evidence": ev,
             "driver": driver, "candidate_positive": label is None and driver == "verdict"}
            for name, label, p, bag, ev, driver in rows]


def _queue_yields(catalog: Catalog) -> dict[str, dict[str, dict[str, int]]]:
    """:func:`queue_yield` of every version, the verdicts read once (not once per version)."""
    with catalog.session() as session:
        ids = list(session.scalars(select(ModelVersion.id).order_by(ModelVersion.id)))
    targets = instance_targets(catalog)
    return {str(v): queue_yield(catalog, v, targets) for v in ids}


def _queue_size(catalog: Catalog, model_version_id: int) -> int:
    with catalog.session() as session:
        return int(session.scalar(
            select(func.count()).select_from(ReviewQueueItem).where(ReviewQueueItem.model_version_id == model_version_id)
        ) or 0)


def _pruned_versions(catalog: Catalog) -> list[int]:
    """Ready versions whose per-patch scores were pruned (`wsireview db prune`)."""
    with catalog.session() as session:
        rows = session.execute(select(ModelVersion.id, ModelVersion.scores_path)
                               .where(ModelVersion.status == "ready").order_by(ModelVersion.id)).all()
    return [vid for vid, stored in rows if scores_state(catalog, stored) == SCORES_PRUNED]
