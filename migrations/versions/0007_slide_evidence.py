"""slide_predictions: the bag score, the instance evidence and what drove each prediction

Revision ID: 0007_slide_evidence
Revises: 0006_label_provenance
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_slide_evidence"
down_revision = "0006_label_provenance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("slide_predictions") as batch:
        batch.add_column(sa.Column("bag_probability", sa.Float()))
        batch.add_column(sa.Column("evidence", sa.Float()))
        batch.add_column(sa.Column("driver", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("slide_predictions") as batch:
        batch.drop_column("driver")
        batch.drop_column("evidence")
        batch.drop_column("bag_probability")
