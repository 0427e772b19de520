"""modality incongruence score per utterance

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("utterance_results", sa.Column("incongruence", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("utterance_results", "incongruence")
