"""The Kafka bus against the real broker: transactions, read_committed, offsets."""

import uuid

import pytest

from merc.bus.base import ConsumerSpec
from merc.bus.kafka import KafkaBus

pytestmark = pytest.mark.integration


def drain(consumer, want, rounds=120):  # up to 30 s: a cold broker creates its offsets topic first
    out = []
    for _ in range(rounds):
        out += consumer.poll(timeout_ms=250)
        if len(out) >= want:
            break
    return out


def test_committed_transaction_is_seen_once_and_aborted_one_never(kafka, scratch_topic):
    bus = KafkaBus(kafka)
    # Topics of the test's own: its records are not MERC's, and merc.emotions' consumers must never meet them.
    topic, source = scratch_topic("transactions"), scratch_topic("input")
    key = uuid.uuid4().hex.encode()
    reader = bus.consumer(ConsumerSpec([topic], group_id=None, from_beginning=True))

    # Input for a consume-transform-produce step.
    plain = bus.producer()
    plain.send(source, key, b"input")
    plain.flush()
    group = f"it-{uuid.uuid4().hex[:8]}"
    consumer = bus.consumer(ConsumerSpec([source], group_id=group))
    [m] = [x for x in drain(consumer, 1) if x.key == key] or [None]
    assert m is not None

    tx = bus.transactional_producer(f"it-{uuid.uuid4().hex[:8]}")
    tx.begin()
    tx.send(topic, key, b"aborted")
    tx.abort()
    tx.begin()
    tx.send(topic, key, b"committed")
    tx.commit({(m.topic, m.partition): m.offset + 1}, consumer)
    tx.close()
    consumer.close()

    seen = [x.value for x in drain(reader, 1) if x.key == key]
    assert seen == [b"committed"]
    # The input offset was committed with the transaction.
    again = bus.consumer(ConsumerSpec([source], group_id=group))
    assert [x for x in drain(again, 1, rounds=8) if x.key == key] == []
    again.close()
    reader.close()


def test_topics_are_co_partitioned(kafka):
    bus = KafkaBus(kafka)
    counts = {bus.partitions(kafka.topic(t)) for t in ("embeddings.text", "embeddings.audio", "embeddings.vision", "fusion.state")}
    assert len(counts) == 1
