"""examples/consumer.py against the real broker: read_committed, headers, revisions and tombstones, on a
topic of the test's own that holds what merc.emotions holds (events written in transactions, one aborted;
a foreign record; an erasure's tombstone)."""

import time
import uuid

import pytest
from unit.test_consumer_example import load_example

from merc.bus.base import ConsumerSpec
from merc.bus.kafka import KafkaBus
from merc.bus.topics import conversation_key
from merc.pipeline.events import SCHEMA
from merc.v1 import common_pb2, events_pb2

pytestmark = pytest.mark.integration

consumer = load_example()


def event(tenant, conversation, sequence, revision, label):
    ref = common_pb2.UtteranceRef(tenant=tenant, conversation_id=conversation, sequence=sequence)
    return events_pb2.EmotionEvent(utterance=ref, revision=revision, label=label).SerializeToString()


def test_the_example_consumer_reads_what_merc_publishes(kafka, scratch_topic):
    bus = KafkaBus(kafka)
    topic = scratch_topic("emotions", partitions=3)
    tenant, a, b = "it", f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    headers = (("schema", SCHEMA), ("tenant", tenant.encode()))
    ka, kb = conversation_key(tenant, a), conversation_key(tenant, b)

    tx = bus.transactional_producer(f"it-consumer-{uuid.uuid4().hex[:8]}")
    anchor = bus.consumer(ConsumerSpec([topic], group_id=None))  # commit() sends offsets through a consumer; none here
    tx.begin()
    tx.send(topic, ka, event(tenant, a, 0, 0, "aborted"), headers)
    tx.abort()
    tx.begin()
    tx.send(topic, ka, event(tenant, a, 0, 0, "neutral"), headers)
    tx.send(topic, kb, event(tenant, b, 0, 0, "joy"), headers)
    tx.commit({}, anchor)
    plain = bus.producer()
    plain.send(topic, ka, b"committed").wait()  # a foreign record: no headers
    tx.begin()
    tx.send(topic, ka, event(tenant, a, 0, 1, "anger"), headers)  # a late modality: revision 1
    tx.commit({}, anchor)
    tx.close()
    anchor.close()
    plain.send(topic, kb, None, (("tenant", tenant.encode()), ("erased", b"1"))).wait()  # an erasure of b
    plain.close()

    view, seen = consumer.EmotionView(), []
    client = {k: v for k, v in bus._common.items() if k != "bootstrap_servers"}
    deadline = time.monotonic() + 60
    consumer.consume(view, kafka.kafka_bootstrap, topic, on_outcome=seen.append,
                     stop=lambda: len(seen) >= 5 or time.monotonic() > deadline, **client)

    kinds = sorted(o.kind for o in seen)
    assert kinds == sorted([consumer.EVENT, consumer.EVENT, consumer.SKIPPED, consumer.REVISION, consumer.ERASED]), seen
    assert [(e.revision, e.label) for e in view.latest(tenant, a)] == [(1, "anger")]
    assert view.latest(tenant, b) == [] and view.conversations() == [(tenant, a)]
    assert "aborted" not in {o.event.label for o in seen if o.event is not None}
