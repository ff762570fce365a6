"""label provenance: who set a slide's label, and when

Labels set in the app (or read from a labels CSV) record their source, so a label that changes
what the model learns can be traced to a person and a time.

Revision ID: 0006_label_provenance
Revises: 0005_grid_min_tissue
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_label_provenance"
down_revision = "0005_grid_min_tissue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("slides", sa.Column("label_set_by", sa.String(128)))
    op.add_column("slides", sa.Column("label_set_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("slides") as batch:
        batch.drop_column("label_set_at")
        batch.drop_column("label_set_by")
