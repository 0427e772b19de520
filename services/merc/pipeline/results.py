"""One utterance's result: what fusion emits as an event and what the store keeps, latest revision wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np


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
    speaker_moods: dict = field(default_factory=dict)
    conversation_mood: dict = field(default_factory=dict)
    model_version: str = ""
    latency_ms: int = 0
    emitted_at: datetime = field(default_factory=lambda: datetime.now(UTC))
