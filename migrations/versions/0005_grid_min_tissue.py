"""grid min tissue: the tissue share a slide's patch grid was cut with, so a changed --min-tissue is noticed

Revision ID: 0005_grid_min_tissue
Revises: 0004
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_grid_min_tissue"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("slides") as batch:
        batch.add_column(sa.Column("min_tissue", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("slides") as batch:
        batch.drop_column("min_tissue")
