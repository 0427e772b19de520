"""utterance results

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "utterance_results",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("speaker", sa.String(128), nullable=False),
        sa.Column("speaker_index", sa.Integer(), nullable=False),
        sa.Column("start_ms", sa.Integer(), nullable=False),
        sa.Column("end_ms", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("sentiment", sa.String(16), nullable=False),
        sa.Column("sentiment_probabilities", sa.JSON(), nullable=False),
        sa.Column("prediction_set", sa.JSON(), nullable=False),
        sa.Column("prediction_set_coverage", sa.Float(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("fused", sa.LargeBinary(), nullable=False),
        sa.Column("speaker_moods", sa.JSON(), nullable=False),
        sa.Column("conversation_mood", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("emitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "conversation_id", "sequence", name="pk_utterance_results"),
    )
    op.create_index("ix_utterance_results_emitted_at", "utterance_results", ["emitted_at"])


def downgrade() -> None:
    op.drop_index("ix_utterance_results_emitted_at", table_name="utterance_results")
    op.drop_table("utterance_results")
