"""The largest embedding and join-state record fusion can hold, built rather than estimated.

A conversation's join state is one Kafka record (merc.pipeline.join): at most ``max_pending``
waiting and ``KEEP_RELEASED`` released utterances, each with one embedding per modality. Fusion
refuses an embedding larger than the largest valid one (every string at its store limit in
4-byte characters, every number at its widest encoding, the vector at the model's dimension), so
the worst state is that embedding repeated, and fusion refuses to start when the worst state,
sealed and keyed, would not fit the producer's request size: a record over it would fail the
transaction at every replay and stall the partition.
"""

from __future__ import annotations

from functools import lru_cache

from merc.pipeline.join import KEEP_RELEASED, MODALITY_ENUMS
from merc.pipeline.results import MAX_ID_CHARS, MAX_INT, MAX_TENANT_CHARS
from merc.runtime import sealing
from merc.v1 import common_pb2, events_pb2, state_pb2

_WIDEST_CHAR = "\U0001F600"  # 4 bytes in UTF-8
_U32, _U64 = 2**32 - 1, 2**64 - 1
# Record framing beyond key and value (batch header, record header, varints): kafka-python's estimate is under 100 bytes.
_FRAMING = 1024


def _text(chars: int) -> str:
    return _WIDEST_CHAR * chars


@lru_cache
def max_embedding_bytes(modality: str, dim: int) -> int:
    """The serialized size of the largest embedding of ``dim`` values fusion accepts."""
    e = events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant=_text(MAX_TENANT_CHARS), conversation_id=_text(MAX_ID_CHARS),
                                          sequence=MAX_INT, speaker=_text(MAX_ID_CHARS), start_ms=MAX_INT, end_ms=MAX_INT),
        modality=MODALITY_ENUMS[modality],
        vector=[-1e6] * dim,
        quality=common_pb2.QualitySignals(text_length=_U32, voiced_ratio=-1.0, snr_db=-1.0, clipping_ratio=-1.0,
                                          face_found_ratio=-1.0, detector_score=-1.0, sharpness=-1.0),
        expected_modalities=list(MODALITY_ENUMS.values()),
        encoder_model=_text(MAX_ID_CHARS),
        encoder_version=_text(MAX_ID_CHARS),
        sent_at_ms=_U64,
    )
    return e.ByteSize()


def max_state_bytes(dims: dict[str, int], max_pending: int) -> int:
    """The largest join-state record value (sealed) for a conversation."""
    entry = state_pb2.JoinEntry(first_arrival_ms=_U64, emitted=True, revision=_U32)
    for modality, dim in dims.items():
        e = entry.embeddings.add()
        # Padding stands in for the largest embedding: only its size matters here.
        target, pad = max_embedding_bytes(modality, dim), 0
        while e.ByteSize() < target:
            pad += max(1, target - e.ByteSize() - 3)
            e.encoder_model = "x" * pad
    state = state_pb2.ConversationJoinState(entries=[entry] * (max_pending + KEEP_RELEASED), updated_at_ms=_U64)
    return state.ByteSize() + sealing.MAX_OVERHEAD


def max_key_bytes() -> int:
    return 4 * (MAX_TENANT_CHARS + MAX_ID_CHARS) + 1


def check(settings, dims: dict[str, int]) -> int:
    """The largest state record, key and framing included; ValueError when it exceeds Kafka's request size."""
    worst = max_state_bytes(dims, settings.max_pending_utterances) + max_key_bytes() + _FRAMING
    if worst > settings.kafka_max_request_bytes:
        fits = settings.max_pending_utterances
        while fits > 1 and max_state_bytes(dims, fits) + max_key_bytes() + _FRAMING > settings.kafka_max_request_bytes:
            fits -= 1
        raise ValueError(
            f"a conversation's join state can reach {worst} bytes with MERC_MAX_PENDING_UTTERANCES="
            f"{settings.max_pending_utterances}, over MERC_KAFKA_MAX_REQUEST_BYTES={settings.kafka_max_request_bytes}: "
            f"lower the first (at most {fits} fits) or raise the second (and the broker's message.max.bytes)")
    return worst
