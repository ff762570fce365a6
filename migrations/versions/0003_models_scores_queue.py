"""model versions, patch scores, slide predictions, review queue

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("parent_id", sa.Integer(), sa.ForeignKey("model_versions.id")),
        sa.Column("encoder", sa.String(256), nullable=False),
        sa.Column("positive_label", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("label_counts", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("checkpoint_path", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "patch_scores",
        sa.Column("model_version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("patch_id", sa.Integer(), sa.ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attention", sa.Float(), nullable=False),
        sa.Column("attention_rank", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
    )
    op.create_index("ix_patch_scores_patch", "patch_scores", ["patch_id"])
    op.create_table(
        "slide_predictions",
        sa.Column("model_version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("slide_id", sa.Integer(), sa.ForeignKey("slides.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("probability", sa.Float(), nullable=False),
    )
    op.create_table(
        "review_queue",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("patch_id", sa.Integer(), sa.ForeignKey("patches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("score", sa.Float()),
        sa.UniqueConstraint("model_version_id", "patch_id", name="uq_queue_patch"),
    )
    op.create_index("ix_review_queue_model_version_id", "review_queue", ["model_version_id"])


def downgrade() -> None:
    op.drop_index("ix_review_queue_model_version_id", table_name="review_queue")
    op.drop_table("review_queue")
    op.drop_table("slide_predictions")
    op.drop_index("ix_patch_scores_patch", table_name="patch_scores")
    op.drop_table("patch_scores")
    op.drop_table("model_versions")
