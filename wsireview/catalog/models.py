"""The catalog's tables (SQLAlchemy 2.0 typed models).

Every table here is created by a migration in ``migrations/versions``; a new table or column
means a new migration, never an edit of an old one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# Slide status values.
READY = "ready"
FAILED = "failed"
MISSING = "missing"

# Verdicts a reviewer can give a patch.
LESION = "lesion"
NOT_LESION = "not_lesion"
UNSURE = "unsure"
ARTIFACT = "artifact"
VERDICTS = (LESION, NOT_LESION, UNSURE, ARTIFACT)

# What a review is: a reviewer's own read of a patch, or an adjudicator's decision between reads.
READ = "read"
ADJUDICATION = "adjudication"


class Slide(Base):
    __tablename__ = "slides"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(512), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    content_hash: Mapped[str | None] = mapped_column(String(128), index=True)
    vendor: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    level_count: Mapped[int | None] = mapped_column(Integer)
    level_downsamples: Mapped[list[Any] | None] = mapped_column(JSON)
    mpp_x: Mapped[float | None] = mapped_column(Float)
    mpp_y: Mapped[float | None] = mapped_column(Float)
    objective_power: Mapped[float | None] = mapped_column(Float)
    # How the patch size in level-0 pixels was derived: "mpp", "objective-power" or "level0-pixels".
    resolution_source: Mapped[str | None] = mapped_column(String(32))
    target_mpp: Mapped[float | None] = mapped_column(Float)
    patch_size_px: Mapped[int | None] = mapped_column(Integer)
    patch_size_level0: Mapped[int | None] = mapped_column(Integer)
    min_tissue: Mapped[float | None] = mapped_column(Float)  # tissue share a grid patch needed
    status: Mapped[str] = mapped_column(String(16), default=READY, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    warning: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(128))
    # Who set the label (a reviewer's name, or "csv:<file>" for `add --labels`) and when.
    label_set_by: Mapped[str | None] = mapped_column(String(128))
    label_set_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    tissue_fraction: Mapped[float | None] = mapped_column(Float)
    # Patches in its grid, kept by ingest (so the slides screen and `status` do not count millions
    # of patch rows); None for rows written without it, which are counted instead.
    patch_count: Mapped[int | None] = mapped_column(Integer)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    mask_path: Mapped[str | None] = mapped_column(Text)
    overlay_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    patches: Mapped[list["Patch"]] = relationship(
        back_populates="slide", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def mpp(self) -> float | None:
        return self.mpp_x


class Patch(Base):
    __tablename__ = "patches"
    __table_args__ = (UniqueConstraint("slide_id", "x", "y", "size", name="uq_patch_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), index=True)
    x: Mapped[int] = mapped_column(Integer)  # level-0 pixels, top-left
    y: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)  # level-0 pixels a side
    tissue_fraction: Mapped[float] = mapped_column(Float)

    slide: Mapped[Slide] = relationship(back_populates="patches")


class FeatureSet(Base):
    """One slide embedded by one encoder; the float16 matrix lives in the workspace file ``path``."""

    __tablename__ = "feature_sets"
    __table_args__ = (UniqueConstraint("slide_id", "encoder", name="uq_feature_set"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), index=True)
    encoder: Mapped[str] = mapped_column(String(256))
    dim: Mapped[int] = mapped_column(Integer)
    n_patches: Mapped[int] = mapped_column(Integer)
    patch_size_px: Mapped[int] = mapped_column(Integer)
    target_mpp: Mapped[float | None] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    encoder: Mapped[str] = mapped_column(String(256))
    positive_label: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    label_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    # Its per-patch scores, a file beside the checkpoint (see catalog.score_files); None once pruned.
    scores_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SlidePrediction(Base):
    __tablename__ = "slide_predictions"

    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), primary_key=True)
    probability: Mapped[float] = mapped_column(Float)  # P(positive label): bag score and evidence combined
    bag_probability: Mapped[float | None] = mapped_column(Float)  # the attention-MIL slide head alone
    evidence: Mapped[float | None] = mapped_column(Float)  # top instance P(lesion) with verdicts in place
    driver: Mapped[str | None] = mapped_column(String(16))  # bag, instances or verdict


class ReviewQueueItem(Base):
    __tablename__ = "review_queue"
    __table_args__ = (UniqueConstraint("model_version_id", "patch_id", name="uq_queue_patch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)  # order of presentation, 1 first
    reason: Mapped[str] = mapped_column(String(32))  # top-attention, uncertain, diverse, random
    score: Mapped[float | None] = mapped_column(Float)
    # Different reviewers who judge it before it leaves the queue: 2 for a blinded double read.
    reads: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


# Claims walk a queue in rank order (wsireview.catalog.claims): the order without a sort.
Index("ix_review_queue_version_rank", ReviewQueueItem.model_version_id, ReviewQueueItem.rank)


class Review(Base):
    """An append-only verdict. Undo marks the row (``undone_at``); nothing is ever deleted."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seconds_taken: Mapped[float | None] = mapped_column(Float)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # READ (a reviewer's verdict) or ADJUDICATION (the decision on a patch whose reads disagree).
    role: Mapped[str] = mapped_column(String(16), default=READ, server_default=READ)


class Claim(Base):
    """A reviewer's lease on one queued patch, so reviewers working at once get different patches.

    One row per patch (the primary key): two reviewers can never hold a live claim on the same patch,
    and taking one is a single conditional upsert (see ``wsireview.catalog.claims``). A claim whose
    ``expires_at`` has passed is free to take (the app that held it crashed or went idle).
    """

    __tablename__ = "claims"

    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(128), index=True)
    # The queue the patch was claimed from (informational: a claim holds the patch in every queue).
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
