"""feature sets: one float16 matrix per slide and encoder

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slide_id", sa.Integer(), sa.ForeignKey("slides.id", ondelete="CASCADE"), nullable=False),
        sa.Column("encoder", sa.String(256), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("n_patches", sa.Integer(), nullable=False),
        sa.Column("patch_size_px", sa.Integer(), nullable=False),
        sa.Column("target_mpp", sa.Float()),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("slide_id", "encoder", name="uq_feature_set"),
    )
    op.create_index("ix_feature_sets_slide_id", "feature_sets", ["slide_id"])


def downgrade() -> None:
    op.drop_index("ix_feature_sets_slide_id", table_name="feature_sets")
    op.drop_table("feature_sets")
