"""Fixtures the integration tests share."""

import time
import uuid

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from merc.bus.kafka import KafkaBus


@pytest.fixture
def scratch_topic(kafka):
    """Make a topic of the test's own, ``<prefix>.it.<name>.<random>``, deleted after the test.

    Tests write their records there, never to the topics MERC's services and its users' consumers
    read (merc.emotions, merc.embeddings.*, merc.dlq, merc.fusion.state): a record that is not
    MERC's own, left on one of those, is what a consumer of the shared broker would meet next."""
    bus = KafkaBus(kafka)
    admin = KafkaAdminClient(**bus._common)
    made = []

    def make(name: str, partitions: int = 1, configs: dict | None = None) -> str:
        topic = kafka.topic(f"it.{name}.{uuid.uuid4().hex[:12]}")
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                      topic_configs={k: str(v) for k, v in (configs or {}).items()})])
        made.append(topic)
        deadline = time.monotonic() + 30
        while True:  # created by the controller; wait until the broker's metadata has it
            try:
                if bus.partitions(topic) == partitions:
                    return topic
            except RuntimeError:
                pass
            assert time.monotonic() < deadline, f"topic {topic} never appeared in the metadata"
            time.sleep(0.1)

    yield make
    if made:
        admin.delete_topics(made)
    admin.close()
