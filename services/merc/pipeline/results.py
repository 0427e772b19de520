"""One utterance's result: what fusion emits as an event and what the store keeps, latest revision wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from merc.v1 import common_pb2

# What the store's columns hold (merc.store.tables): a reference beyond them would fail the fusion
# service's write of the row, at every replay. Encoders refuse such requests; fusion dead-letters such records.
MAX_TENANT_CHARS = 64
MAX_ID_CHARS = 128  # conversation ids and speakers
MAX_INT = 2**31 - 1  # sequence, start_ms, end_ms: INTEGER columns (32-bit in PostgreSQL)


def ref_problem(ref: common_pb2.UtteranceRef) -> str | None:
    """Why the store could not keep this utterance reference; None when it can."""
    for name, value, limit in (("tenant", ref.tenant, MAX_TENANT_CHARS), ("conversation_id", ref.conversation_id, MAX_ID_CHARS),
                               ("speaker", ref.speaker, MAX_ID_CHARS)):
        if len(value) > limit:
            return f"utterance.{name} is longer than {limit} characters"
        if "\x00" in value:  # PostgreSQL text cannot hold it
            return f"utterance.{name} contains a NUL character"
    for name, value in (("sequence", ref.sequence), ("start_ms", ref.start_ms), ("end_ms", ref.end_ms)):
        if value > MAX_INT:
            return f"utterance.{name} is {value}; the limit is {MAX_INT}"
    return None


@dataclass
class UtteranceResult:
    tenant: str
    conversation_id: str
    sequence: int
    speaker: str
    speaker_index: int
    start_ms: int
    end_ms: int
    revision: int
    event_id: str
    label: str
    confidence: float
    probabilities: list[float]
    sentiment: str
    sentiment_probabilities: list[float]
    prediction_set: list[str]
    prediction_set_coverage: float
    modalities: list[str]
    weights: list[float]
    missing: list[str]
    degraded: bool
    fused: np.ndarray
    incongruence: float = 0.0
    # Each used modality's own calibrated posterior (its expert's), LABELS order: what it predicted alone.
    posteriors: dict = field(default_factory=dict)
    # How much of the text's say was taken away because it is unlike the training text (merc.pipeline.text_shift).
    text_shift: float = 0.0
    speaker_moods: dict = field(default_factory=dict)
    conversation_mood: dict = field(default_factory=dict)
    model_version: str = ""
    latency_ms: int = 0
    emitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))
