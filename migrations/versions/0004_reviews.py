"""reviews: append-only verdicts, undo marks a row

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patch_id", sa.Integer(), sa.ForeignKey("patches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds_taken", sa.Float()),
        sa.Column("model_version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="SET NULL")),
        sa.Column("undone_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_reviews_patch_id", "reviews", ["patch_id"])
    op.create_index("ix_reviews_reviewer", "reviews", ["reviewer"])


def downgrade() -> None:
    op.drop_index("ix_reviews_reviewer", table_name="reviews")
    op.drop_index("ix_reviews_patch_id", table_name="reviews")
    op.drop_table("reviews")
