"""slides and patches

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slides",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(128)),
        sa.Column("vendor", sa.String(64)),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("level_count", sa.Integer()),
        sa.Column("level_downsamples", sa.JSON()),
        sa.Column("mpp_x", sa.Float()),
        sa.Column("mpp_y", sa.Float()),
        sa.Column("objective_power", sa.Float()),
        sa.Column("resolution_source", sa.String(32)),
        sa.Column("target_mpp", sa.Float()),
        sa.Column("patch_size_px", sa.Integer()),
        sa.Column("patch_size_level0", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("warning", sa.Text()),
        sa.Column("label", sa.String(128)),
        sa.Column("tissue_fraction", sa.Float()),
        sa.Column("thumbnail_path", sa.Text()),
        sa.Column("mask_path", sa.Text()),
        sa.Column("overlay_path", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("path", name="uq_slides_path"),
    )
    op.create_index("ix_slides_name", "slides", ["name"])
    op.create_index("ix_slides_content_hash", "slides", ["content_hash"])
    op.create_index("ix_slides_status", "slides", ["status"])
    op.create_table(
        "patches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slide_id", sa.Integer(), sa.ForeignKey("slides.id", ondelete="CASCADE"), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("tissue_fraction", sa.Float(), nullable=False),
        sa.UniqueConstraint("slide_id", "x", "y", "size", name="uq_patch_position"),
    )
    op.create_index("ix_patches_slide_id", "patches", ["slide_id"])


def downgrade() -> None:
    op.drop_index("ix_patches_slide_id", table_name="patches")
    op.drop_table("patches")
    op.drop_index("ix_slides_status", table_name="slides")
    op.drop_index("ix_slides_content_hash", table_name="slides")
    op.drop_index("ix_slides_name", table_name="slides")
    op.drop_table("slides")
