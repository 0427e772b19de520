"""how much of an utterance's text was distrusted as unlike the training text

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before were fused without the guard: nothing was taken from their text.
    op.add_column("utterance_results", sa.Column("text_shift", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("utterance_results", "text_shift")
