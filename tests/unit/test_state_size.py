"""The join state of one conversation provably fits one Kafka record (merc.pipeline.state_size)."""

import pytest

from merc.bus.base import Message
from merc.bus.topics import conversation_key
from merc.pipeline import state_size
from merc.pipeline.fusion import PoisonMessage, decode_embedding
from merc.pipeline.join import KEEP_RELEASED, MODALITY_ENUMS, Join
from merc.pipeline.results import MAX_ID_CHARS, MAX_INT, MAX_TENANT_CHARS
from merc.runtime.config import Settings
from merc.runtime.sealing import Sealing
from merc.v1 import common_pb2, events_pb2

DIMS = {"text": 384, "audio": 128, "vision": 128}  # the shipped fusion model's
WIDE = "\U0001F600"


def hostile(seq, modality):
    """An embedding every field of which is as large as fusion accepts."""
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant=WIDE * MAX_TENANT_CHARS, conversation_id=WIDE * MAX_ID_CHARS, sequence=seq,
                                          speaker=WIDE * MAX_ID_CHARS, start_ms=MAX_INT, end_ms=MAX_INT),
        modality=MODALITY_ENUMS[modality], vector=[1e6] * DIMS[modality],
        quality=common_pb2.QualitySignals(text_length=2**32 - 1, voiced_ratio=1, snr_db=1, clipping_ratio=1,
                                          face_found_ratio=1, detector_score=1, sharpness=1),
        expected_modalities=list(MODALITY_ENUMS.values()), encoder_model=WIDE * MAX_ID_CHARS,
        encoder_version=WIDE * MAX_ID_CHARS, sent_at_ms=2**64 - 1)


def test_the_worst_state_a_join_can_hold_is_within_the_bound_and_the_default_fits_kafka():
    settings = Settings()
    j = Join(window_ms=10**9, max_pending=settings.max_pending_utterances)
    last = KEEP_RELEASED + settings.max_pending_utterances + 20
    for seq in range(last):  # released ones, then more waiting than the limit (all but text missing)
        for m in ("text", "audio", "vision") if seq < KEEP_RELEASED + 5 else ("text",):
            j.add(hostile(seq, m), now_ms=2**40)
        j.release(now_ms=2**40)
    key = (WIDE * MAX_TENANT_CHARS, WIDE * MAX_ID_CHARS)
    state = j.snapshot(key, now_ms=2**63)
    sealed = Sealing.parse("k1:" + "s" * 32).seal("merc.fusion.state", conversation_key(*key), state.SerializeToString())
    assert len(state.entries) <= KEEP_RELEASED + settings.max_pending_utterances
    assert len(sealed) <= state_size.max_state_bytes(DIMS, settings.max_pending_utterances)
    assert len(conversation_key(*key)) <= state_size.max_key_bytes()
    assert state_size.check(settings, DIMS) <= settings.kafka_max_request_bytes


def test_a_limit_that_cannot_fit_kafka_is_refused_at_start_with_what_would_fit():
    with pytest.raises(ValueError, match=r"MERC_MAX_PENDING_UTTERANCES=1000.*at most \d+ fits"):
        state_size.check(Settings(max_pending_utterances=1000), DIMS)
    assert state_size.check(Settings(max_pending_utterances=1000, kafka_max_request_bytes=16 * 2**20), DIMS)


def test_an_embedding_larger_than_any_valid_one_is_dead_lettered():
    e = hostile(0, "text")
    headers = (("tenant", e.utterance.tenant.encode()),)
    assert decode_embedding(Message("merc.embeddings.text", b"k", e.SerializeToString(), headers), DIMS) == e
    e.encoder_version = "v" * 100_000  # within every other check
    with pytest.raises(PoisonMessage, match="largest valid text embedding"):
        decode_embedding(Message("merc.embeddings.text", b"k", e.SerializeToString(), headers), DIMS)
