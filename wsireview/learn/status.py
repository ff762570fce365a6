"""The model part of `wsireview status --json`."""

from __future__ import annotations

from sqlalchemy import func, select

from wsireview.catalog import READY, Catalog, ModelVersion, Review, ReviewQueueItem


def queued_patches(catalog: Catalog, model_version_id: int) -> int:
    """Patches in a version's queue that nobody has reviewed yet (reviews that count)."""
    with catalog.session() as session:
        reviewed = select(Review.patch_id).where(Review.undone_at.is_(None))
        return int(session.scalar(
            select(func.count()).select_from(ReviewQueueItem).where(
                ReviewQueueItem.model_version_id == model_version_id, ReviewQueueItem.patch_id.not_in(reviewed)
            )
        ) or 0)


def model_status(catalog: Catalog) -> dict:
    """Latest ready model version: id, parent, encoder, metrics, label counts, queued patches."""
    with catalog.session() as session:
        version = session.scalar(
            select(ModelVersion).where(ModelVersion.status == READY).order_by(ModelVersion.id.desc()).limit(1)
        )
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
        "versions": versions,
        "queued": queued_patches(catalog, version.id),
        "queue_size": _queue_size(catalog, version.id),
    }


def _queue_size(catalog: Catalog, model_version_id: int) -> int:
    with catalog.session() as session:
        return int(session.scalar(
            select(func.count()).select_from(ReviewQueueItem).where(ReviewQueueItem.model_version_id == model_version_id)
        ) or 0)
