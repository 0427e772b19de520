"""Acknowledged means on the broker, against the real broker: a send returns before the broker has
answered, so only the Delivery says whether a record is on the topic. A record the broker refuses,
and one for a topic that does not exist, raise DeliveryFailed instead of passing for published.
(An outage longer than the delivery timeout stops the shared broker: tests/e2e/test_faults.py.)"""

import uuid

import pytest

from merc.bus import DeliveryFailed
from merc.bus.kafka import KafkaBus

pytestmark = pytest.mark.integration

TOPIC_LIMIT = 1024  # the test topic's max.message.bytes; the producer's own limit is 1 MiB


@pytest.fixture
def small_topic(scratch_topic):
    """A topic of its own whose broker-side record limit is far below the producer's: only the
    broker can refuse what is sent to it."""
    return scratch_topic("delivery", configs={"max.message.bytes": TOPIC_LIMIT})


def test_a_record_the_broker_refuses_raises_delivery_failed(kafka, small_topic):
    bus = KafkaBus(kafka)
    producer = bus.producer()
    try:
        # The send itself succeeds (the producer accepts 8 KiB); the broker answers MESSAGE_TOO_LARGE.
        delivery = producer.send(small_topic, b"too-large", b"x" * (8 * TOPIC_LIMIT))
        with pytest.raises(DeliveryFailed, match="MessageSizeTooLarge"):
            delivery.wait()
        producer.send(small_topic, b"fits", b"y" * 100).wait()  # the topic itself works
    finally:
        producer.close()
    assert [m.key for m in bus.read_partition(small_topic, 0)] == [b"fits"]  # and holds only what was acknowledged


def test_a_record_for_a_topic_that_does_not_exist_raises_delivery_failed(kafka):
    # The broker does not create topics on demand (deploy/local/kafka.sh: auto.create.topics.enable=false),
    # so the producer never gets the topic's metadata: it gives up after the delivery timeout.
    producer = KafkaBus(kafka.model_copy(update={"kafka_delivery_timeout_s": 3.0})).producer()
    missing = kafka.topic(f"it.missing.{uuid.uuid4().hex[:12]}")
    try:
        with pytest.raises(DeliveryFailed, match=missing):
            producer.send(missing, b"k", b"v").wait()
    finally:
        producer.close()


def test_a_record_over_the_configured_request_size_is_refused_by_the_producer(kafka, small_topic):
    """MERC_KAFKA_MAX_REQUEST_BYTES is what the producers enforce (fusion's state bound is proved against it)."""
    producer = KafkaBus(kafka.model_copy(update={"kafka_max_request_bytes": 64 * 1024})).producer()
    try:
        with pytest.raises(DeliveryFailed, match="max_request_size"):  # refused before it leaves, not by the broker
            producer.send(small_topic, b"k", b"x" * (65 * 1024)).wait()
    finally:
        producer.close()
