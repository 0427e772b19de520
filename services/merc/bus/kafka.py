"""The Kafka bus (kafka-python). The only module that imports a Kafka client."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
)
from kafka import TopicPartition as KafkaTopicPartition

from merc.bus.base import (
    Bus,
    Consumer,
    ConsumerSpec,
    Headers,
    Message,
    Producer,
    TopicPartition,
    TransactionalProducer,
)

log = logging.getLogger(__name__)


class KafkaBus(Bus):
    def __init__(self, settings) -> None:
        self._settings = settings
        self._common = {"bootstrap_servers": settings.kafka_bootstrap.split(","), "security_protocol": settings.kafka_security_protocol}
        if settings.kafka_sasl_mechanism:
            self._common.update(
                sasl_mechanism=settings.kafka_sasl_mechanism,
                sasl_plain_username=settings.kafka_sasl_username,
                sasl_plain_password=settings.kafka_sasl_password,
            )
        if settings.kafka_ssl_cafile:
            self._common["ssl_cafile"] = settings.kafka_ssl_cafile

    def producer(self) -> Producer:
        return _KafkaProducer(KafkaProducer(acks="all", linger_ms=2, **self._common))

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        producer = KafkaProducer(transactional_id=transactional_id, acks="all", linger_ms=2, **self._common)
        # Fences any zombie with the same id and aborts its open transaction.
        producer.init_transactions()
        return _KafkaTransactionalProducer(producer)

    def consumer(self, spec: ConsumerSpec) -> Consumer:
        consumer = KafkaConsumer(
            group_id=spec.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if spec.from_beginning else "latest",
            isolation_level="read_committed" if spec.read_committed else "read_uncommitted",
            allow_auto_create_topics=False,
            **spec.extra,
            **self._common,
        )
        if spec.group_id is None:
            parts = [KafkaTopicPartition(t, p) for t in spec.topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            consumer.assign(parts)
            if spec.from_beginning:
                consumer.seek_to_beginning(*parts)
            else:
                consumer.seek_to_end(*parts)
            if spec.on_assign:
                spec.on_assign([(tp.topic, tp.partition) for tp in parts])
        else:
            consumer.subscribe(list(spec.topics), listener=_Listener(spec))
        return _KafkaConsumer(consumer)

    def read_partition(self, topic: str, partition: int) -> Iterable[Message]:
        consumer = KafkaConsumer(enable_auto_commit=False, isolation_level="read_committed", **self._common)
        try:
            tp = KafkaTopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            end = consumer.end_offsets([tp])[tp]
            while consumer.position(tp) < end:
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        yield _message(r)
        finally:
            consumer.close()

    def partitions(self, topic: str) -> int:
        consumer = KafkaConsumer(**self._common)
        try:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                raise RuntimeError(f"Kafka topic {topic!r} does not exist at {self._settings.kafka_bootstrap}")
            return len(parts)
        finally:
            consumer.close()


def _message(r) -> Message:
    return Message(r.topic, r.key, r.value, tuple(r.headers or ()), r.partition, r.offset, r.timestamp)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, spec: ConsumerSpec) -> None:
        self._spec = spec

    def on_partitions_revoked(self, revoked):
        if self._spec.on_revoke:
            self._spec.on_revoke([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned):
        if self._spec.on_assign:
            self._spec.on_assign([(tp.topic, tp.partition) for tp in assigned])


class _KafkaProducer(Producer):
    def __init__(self, producer: KafkaProducer) -> None:
        self._p = producer

    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> None:
        self._p.send(topic, key=key, value=value, headers=list(headers), partition=partition)

    def flush(self, timeout_s: float = 30.0) -> None:
        self._p.flush(timeout=timeout_s)

    def close(self) -> None:
        self._p.close()


class _KafkaTransactionalProducer(_KafkaProducer, TransactionalProducer):
    def begin(self) -> None:
        self._p.begin_transaction()

    def commit(self, offsets: dict[TopicPartition, int], consumer: Consumer) -> None:
        assert isinstance(consumer, _KafkaConsumer)
        if offsets:
            self._p.send_offsets_to_transaction(
                {KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()},
                consumer._c.group_metadata(),
            )
        self._p.commit_transaction()

    def abort(self) -> None:
        self._p.abort_transaction()


class _KafkaConsumer(Consumer):
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._c = consumer
        self._next: dict[KafkaTopicPartition, int] = {}  # next offset after what poll returned (for lag)

    def poll(self, timeout_ms: int = 100, max_records: int = 500) -> list[Message]:
        batches = self._c.poll(timeout_ms=timeout_ms, max_records=max_records)
        for tp, records in batches.items():
            if records:
                self._next[tp] = records[-1].offset + 1
        return [_message(r) for records in batches.values() for r in records]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self._c.commit({KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})

    def assignment(self) -> list[TopicPartition]:
        return [(tp.topic, tp.partition) for tp in self._c.assignment()]

    def lag(self, since: dict[TopicPartition, int] | None = None) -> dict[TopicPartition, int]:
        # Highwater from the last fetch response: no broker round trip (position() may make one).
        # Exact on the embedding topics, whose producers are not transactional.
        out = {}
        for tp in self._c.assignment() or ():
            high = self._c.highwater(tp)
            done = (since or {}).get((tp.topic, tp.partition), self._next.get(tp))
            if high is not None and done is not None:
                out[(tp.topic, tp.partition)] = max(0, high - done)
        return out

    def close(self) -> None:
        self._c.close()
