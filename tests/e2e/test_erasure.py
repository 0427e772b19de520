"""Right to erasure through the real gateway: rows deleted from PostgreSQL, tombstones on Kafka
(embeddings, events, dead letters), the fusion service forgets the conversation (its compacted join
state is tombstoned too)."""

import time

import grpc
import pytest

from e2e.conftest import new_conversation
from e2e.test_text_pipeline import send
from merc.bus.base import ConsumerSpec
from merc.bus.kafka import KafkaBus
from merc.bus.topics import conversation_key
from merc.v1 import gateway_pb2

pytestmark = pytest.mark.e2e


def records(cfg, topic: str, key: bytes, timeout_s: float = 20.0, want=lambda ms: bool(ms)) -> list:
    consumer = KafkaBus(cfg).consumer(ConsumerSpec([topic], group_id=None, from_beginning=True))
    found, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline and not want(found):
        found += [m for m in consumer.poll(timeout_ms=500) if m.key == key]
    consumer.close()
    return found


def test_erase_conversation(running, gateway, reader):
    conv = new_conversation()
    for seq, text in enumerate(["I want to close my account.", "Please delete everything you have on me."]):
        send(gateway, conv, seq, {"speaker": "caller", "text": text})
    assert len(reader.collect(conv, 2)) == 2
    assert len(gateway.GetConversation(gateway_pb2.GetConversationRequest(conversation_id=conv), timeout=10).events) == 2

    reply = gateway.EraseConversation(gateway_pb2.EraseConversationRequest(conversation_id=conv), timeout=30)
    assert reply.utterances_deleted == 2
    with pytest.raises(grpc.RpcError) as e:
        gateway.GetConversation(gateway_pb2.GetConversationRequest(conversation_id=conv), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    def tomb(ms) -> bool:
        return any(m.value is None for m in ms)

    key = conversation_key(running.tenant, conv)  # every record about the conversation: scoped by tenant
    assert tomb(records(running, running.topic("emotions"), key, want=tomb))
    assert tomb(records(running, running.topic("fusion.state"), key, want=tomb))
    # merc.dlq gets the erasure's own tombstone (for whoever replays dead letters), and no dead letter:
    # a tombstone is not poison.
    dlq = records(running, running.topic("dlq"), key, want=tomb)
    assert tomb(dlq) and all(m.value is None for m in dlq)
    assert gateway.EraseConversation(gateway_pb2.EraseConversationRequest(conversation_id=conv), timeout=30).utterances_deleted == 0
