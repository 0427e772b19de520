"""EmotionEvent: built from a stored result, with a deterministic id."""

from __future__ import annotations

import uuid

from merc.pipeline.join import MODALITY_ENUMS
from merc.pipeline.results import UtteranceResult
from merc.v1 import common_pb2, events_pb2

# The `schema` header of each topic's records (merc.bus.topics).
SCHEMA = b"merc.v1.EmotionEvent"
EMBEDDING_SCHEMA = b"merc.v1.ModalityEmbedding"
_NAMESPACE = uuid.UUID("6f1c2a52-3c52-4a53-9a55-4d45524300a1")


def event_id(tenant: str, conversation_id: str, sequence: int, revision: int) -> str:
    return uuid.uuid5(_NAMESPACE, f"{tenant}\x00{conversation_id}\x00{sequence}\x00{revision}").hex


def _mood(speaker: str, mood: dict | None) -> events_pb2.SpeakerMood:
    if not mood:
        return events_pb2.SpeakerMood(speaker=speaker)
    return events_pb2.SpeakerMood(
        speaker=speaker,
        probabilities=mood["probabilities"],
        valence=mood["valence"],
        arousal=mood["arousal"],
        emotion_shifts=mood["emotion_shifts"],
        utterances=mood["utterances"],
    )


def to_event(r: UtteranceResult) -> events_pb2.EmotionEvent:
    return events_pb2.EmotionEvent(
        event_id=r.event_id,
        utterance=common_pb2.UtteranceRef(
            tenant=r.tenant,
            conversation_id=r.conversation_id,
            sequence=r.sequence,
            speaker=r.speaker,
            start_ms=r.start_ms,
            end_ms=r.end_ms,
        ),
        probabilities=r.probabilities,
        label=r.label,
        confidence=r.confidence,
        prediction_set=r.prediction_set,
        prediction_set_coverage=r.prediction_set_coverage,
        sentiment_probabilities=r.sentiment_probabilities,
        sentiment=r.sentiment,
        modalities=[MODALITY_ENUMS[m] for m in r.modalities],
        modality_weights=r.weights,
        degraded=r.degraded,
        incongruence=r.incongruence,
        text_shift=r.text_shift,
        modality_posteriors=[events_pb2.ModalityPosterior(modality=MODALITY_ENUMS[m], probabilities=r.posteriors[m])
                             for m in r.modalities if m in r.posteriors],
        missing_modalities=[MODALITY_ENUMS[m] for m in r.missing],
        revision=r.revision,
        model_version=r.model_version,
        latency_ms=r.latency_ms,
        emitted_at_ms=int(r.emitted_at.timestamp() * 1000),
        conversation_mood=_mood("", r.conversation_mood),
        speaker_mood=_mood(r.speaker, r.speaker_moods.get(r.speaker)),
    )
