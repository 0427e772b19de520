"""Tables. Only results and embeddings-derived vectors are stored: never raw media or utterance text."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from merc.pipeline.results import MAX_ID_CHARS, MAX_TENANT_CHARS


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_name)s"}
    )


class UtteranceRow(Base):
    """The latest revision of one utterance's result, with the mood snapshot it produced."""

    __tablename__ = "utterance_results"

    tenant: Mapped[str] = mapped_column(String(MAX_TENANT_CHARS), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(MAX_ID_CHARS), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    speaker: Mapped[str] = mapped_column(String(MAX_ID_CHARS))
    speaker_index: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(Integer, default=0)
    end_ms: Mapped[int] = mapped_column(Integer, default=0)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    event_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list] = mapped_column(JSON)
    sentiment: Mapped[str] = mapped_column(String(16))
    sentiment_probabilities: Mapped[list] = mapped_column(JSON)
    prediction_set: Mapped[list] = mapped_column(JSON)
    prediction_set_coverage: Mapped[float] = mapped_column(Float)
    modalities: Mapped[list] = mapped_column(JSON)
    weights: Mapped[list] = mapped_column(JSON)
    missing: Mapped[list] = mapped_column(JSON)
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    # Disagreement of the per-modality posteriors, 0..1 (merc.pipeline.incongruence).
    incongruence: Mapped[float] = mapped_column(Float, default=0.0)
    # Each used modality's own calibrated posterior, by modality (merc.pipeline.results.UtteranceResult).
    posteriors: Mapped[dict] = mapped_column(JSON, default=dict)
    # The share of its words' say taken away as unlike the fusion's training text, 0..1 (merc.pipeline.text_shift).
    text_shift: Mapped[float] = mapped_column(Float, default=0.0)
    # float32 bytes of the fused vector: the context of later utterances.
    fused: Mapped[bytes] = mapped_column(LargeBinary)
    # Every speaker's mood after this utterance, by speaker.
    speaker_moods: Mapped[dict] = mapped_column(JSON)
    conversation_mood: Mapped[dict] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    emitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
