"""Records the store or the fusion model cannot use, written straight to Kafka as a hostile or buggy
producer would: each lands in merc.dlq with its reason, and the other tenants' events keep flowing."""

from __future__ import annotations

import time

import pytest

from e2e.conftest import new_conversation
from e2e.test_text_pipeline import send
from merc.bus.base import ConsumerSpec
from merc.bus.kafka import KafkaBus
from merc.bus.topics import conversation_key
from merc.v1 import common_pb2, events_pb2

pytestmark = pytest.mark.e2e

TEXT_DIM = 384  # the shipped text encoder's embedding


def embedding(tenant: str, conversation: str, size: int = TEXT_DIM) -> bytes:
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant=tenant, conversation_id=conversation, sequence=0, speaker="A"),
        modality=common_pb2.MODALITY_TEXT, vector=[0.01] * size, expected_modalities=[common_pb2.MODALITY_TEXT],
    ).SerializeToString()


def test_records_fusion_cannot_use_are_dead_lettered_and_other_tenants_keep_flowing(running, gateway, reader):
    base = new_conversation()
    bad = {  # name -> (tenant, conversation, vector size, tenant header, the reason fusion must give)
        "long-tenant": ("x" * 65, f"{base}-a", TEXT_DIM, "x" * 65, "tenant is longer than 64"),
        "long-conversation": (running.tenant, f"{base}-" + "b" * 129, TEXT_DIM, running.tenant, "conversation_id is longer than 128"),
        "nul": (running.tenant, f"{base}-c\x00d", TEXT_DIM, running.tenant, "contains a NUL"),
        "dimension": (running.tenant, f"{base}-e", 16, running.tenant, "the text vector has 16 values"),
        "tenant-header": (running.tenant, f"{base}-f", TEXT_DIM, "mallory", "differs from utterance.tenant"),
    }
    dlq = KafkaBus(running).consumer(ConsumerSpec([running.topic("dlq")], group_id=None, from_beginning=False))
    dlq.poll(timeout_ms=200)
    producer = KafkaBus(running).producer()
    sent = {}
    for name, (tenant, conv, size, header, reason) in bad.items():
        key = conversation_key(tenant, conv)
        value = embedding(tenant, conv, size)
        producer.send(running.topic("embeddings.text"), key, value, (("schema", b"merc.v1.ModalityEmbedding"), ("tenant", header.encode())))
        sent[key] = (name, value, reason)
    producer.flush()
    producer.close()

    good = new_conversation()
    send(gateway, good, 0, {"speaker": "A", "text": "Other tenants' poison is not my problem."})
    [event] = reader.collect(good, 1)
    assert event.utterance.conversation_id == good and list(event.modalities) == [common_pb2.MODALITY_TEXT]

    dead, deadline = {}, time.monotonic() + 60
    while len(dead) < len(sent) and time.monotonic() < deadline:
        dead.update({m.key: m for m in dlq.poll(timeout_ms=500) if m.key in sent})
    dlq.close()
    for key, (name, value, reason) in sent.items():
        assert key in dead, f"{name}: not in merc.dlq"
        assert dead[key].value == value, f"{name}: dead-lettered changed"
        assert reason in dead[key].header("reason").decode(), f"{name}: {dead[key].header('reason')!r}"
        assert dead[key].header("source") == running.topic("embeddings.text").encode()
