"""each modality's own posterior per utterance

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before have none: their events carry no per-modality posteriors.
    op.add_column("utterance_results", sa.Column("posteriors", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("utterance_results", "posteriors")
