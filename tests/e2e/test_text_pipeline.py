"""A MELD dev dialogue through the gateway -> text encoder -> Triton -> Kafka -> fusion -> Kafka + PostgreSQL."""

import grpc
import numpy as np
import pytest

from e2e.conftest import dialogue, new_conversation
from merc.store import Store
from merc.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.e2e


def send(gateway, conv, seq, u):
    ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker=u["speaker"], start_ms=seq * 1000, end_ms=seq * 1000 + 900)
    return gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=u["text"]), timeout=30)


def test_dialogue_end_to_end(gateway, reader, running):
    conv = new_conversation()
    lines = dialogue()
    for seq, u in enumerate(lines):
        reply = send(gateway, conv, seq, u)
        assert list(reply.modalities) == [common_pb2.MODALITY_TEXT] and not reply.errors

    events = reader.collect(conv, len(lines))
    assert [e.utterance.sequence for e in events] == list(range(len(lines))), "one event per utterance, in order"
    for e in events:
        assert abs(sum(e.probabilities) - 1) < 1e-4
        assert e.label in e.prediction_set and e.confidence == pytest.approx(max(e.probabilities), abs=1e-5)
        assert list(e.modalities) == [common_pb2.MODALITY_TEXT] and not e.degraded
        assert e.revision == 0 and e.model_version
    assert events[-1].conversation_mood.utterances == len(lines)

    rows = Store(running.database_url).conversation(running.tenant, conv)
    assert [r.sequence for r in rows] == list(range(len(lines)))
    assert [r.event_id for r in rows] == [e.event_id for e in events]

    stored = gateway.GetConversation(gateway_pb2.GetConversationRequest(conversation_id=conv), timeout=10)
    assert [e.event_id for e in stored.events] == [e.event_id for e in events]
    np.testing.assert_allclose([list(e.probabilities) for e in stored.events], [list(e.probabilities) for e in events], atol=1e-6)


def test_bad_requests_get_precise_errors_and_the_gateway_stays_up(gateway):
    ref = common_pb2.UtteranceRef(conversation_id="", sequence=0)
    with pytest.raises(grpc.RpcError) as e:
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="hi"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "conversation_id" in e.value.details()

    ref = common_pb2.UtteranceRef(conversation_id=new_conversation(), sequence=0)
    with pytest.raises(grpc.RpcError) as e:
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no text" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="x" * 10_000), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in e.value.details()

    with pytest.raises(grpc.RpcError) as e:
        gateway.GetConversation(gateway_pb2.GetConversationRequest(conversation_id="never-seen"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    reply = gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="still here?"), timeout=30)
    assert list(reply.modalities) == [common_pb2.MODALITY_TEXT]


def test_stream_conversation_returns_each_event(gateway):
    conv = new_conversation()
    lines = dialogue()[:4]

    def requests():
        for seq, u in enumerate(lines):
            ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker=u["speaker"])
            yield gateway_pb2.StreamConversationRequest(utterance=gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=u["text"]))

    replies = list(gateway.StreamConversation(requests(), timeout=120))
    assert sorted(r.event.utterance.sequence for r in replies) == list(range(len(lines)))
    assert all(r.event.utterance.conversation_id == conv for r in replies)
