"""reviews.role (a read or an adjudication) and review_queue.reads (how many reviewers judge an item)

Revision ID: 0008_adjudication
Revises: 0007_slide_evidence
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_adjudication"
down_revision = "0007_slide_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="read"))
    with op.batch_alter_table("review_queue") as batch:
        batch.add_column(sa.Column("reads", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("review_queue") as batch:
        batch.drop_column("reads")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("role")
