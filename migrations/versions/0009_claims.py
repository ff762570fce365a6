"""claims: reviewers' short leases on queued patches, so reviewers working at once get different patches;
an index to walk a queue in rank order

Revision ID: 0009_claims
Revises: 0008_score_files
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_claims"
down_revision = "0008_score_files"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("patch_id", sa.Integer(), sa.ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id", ondelete="SET NULL")),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_claims_reviewer", "claims", ["reviewer"])
    op.create_index("ix_claims_expires_at", "claims", ["expires_at"])
    op.create_index("ix_review_queue_version_rank", "review_queue", ["model_version_id", "rank"])


def downgrade() -> None:
    op.drop_index("ix_review_queue_version_rank", table_name="review_queue")
    op.drop_index("ix_claims_expires_at", table_name="claims")
    op.drop_index("ix_claims_reviewer", table_name="claims")
    op.drop_table("claims")
