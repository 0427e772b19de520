from merc.bus.base import ConsumerSpec
from merc.bus.memory import MemoryBus


def test_transaction_is_invisible_until_commit_and_commits_offsets():
    bus = MemoryBus(partitions=2)
    bus.producer().send("in", b"k", b"v1")
    consumer = bus.consumer(ConsumerSpec(["in"], group_id="g"))
    [m] = consumer.poll(timeout_ms=0)
    reader = bus.consumer(ConsumerSpec(["out"], group_id=None))
    tx = bus.transactional_producer("t")
    tx.begin()
    tx.send("out", b"k", b"result")
    assert reader.poll(timeout_ms=0) == []
    tx.commit({(m.topic, m.partition): m.offset + 1}, consumer)
    assert [x.value for x in reader.poll(timeout_ms=0)] == [b"result"]
    # A new consumer of the group starts after the committed offset.
    assert bus.consumer(ConsumerSpec(["in"], group_id="g")).poll(timeout_ms=0) == []


def test_aborted_transaction_leaves_nothing_and_replays_input():
    bus = MemoryBus()
    bus.producer().send("in", b"k", b"v1")
    consumer = bus.consumer(ConsumerSpec(["in"], group_id="g"))
    consumer.poll(timeout_ms=0)
    tx = bus.transactional_producer("t")
    tx.begin()
    tx.send("out", b"k", b"result")
    tx.abort()
    assert bus.messages("out") == []
    assert [m.value for m in bus.consumer(ConsumerSpec(["in"], group_id="g")).poll(timeout_ms=0)] == [b"v1"]


def test_same_key_same_partition_across_topics():
    bus = MemoryBus(partitions=3)
    for key in (b"a", b"b", b"conversation-7"):
        assert bus.partition_for("x", key) == bus.partition_for("y", key)
