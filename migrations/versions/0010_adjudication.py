"""reviews.role (a read or an adjudication) and review_queue.reads (how many reviewers judge an item)

Revision ID: 0010_adjudication
Revises: 0009_claims
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_adjudication"
down_revision = "0009_claims"
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
