"""The Kafka bus (kafka-python). The only module that imports a Kafka client."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
)
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import KafkaError

from merc.bus.base import (
    Bus,
    Consumer,
    ConsumerSpec,
    Delivery,
    DeliveryFailed,
    Headers,
    Message,
    Producer,
    TopicPartition,
    TransactionalProducer,
)

log = logging.getLogger(__name__)

# No linger: an encoder waits for its record's acknowledgement before it answers, and kafka-python's
# linger costs ~2.5 ms of every such wait (measured: produce + ack 3.1 ms at 2, 0.7 ms at 0). Records
# still batch under load: with one request in flight, what arrives meanwhile goes out together.
LINGER_MS = 0
# A delivery's wait outlasts the producer's own delivery timeout by this much, so that it is the
# producer that declares a record failed (its expiry check runs on the sender thread's schedule).
EXPIRY_GRACE_S = 1.0


def producer_timeouts(delivery_timeout_s: float) -> dict[str, int]:
    """A plain producer's timeouts, all within MERC_KAFKA_DELIVERY_TIMEOUT_S.

    Set, not left to the client's defaults (2 minutes of retries, 1 minute blocked on metadata): a
    caller waits for its record's acknowledgement and must hear "retry" before its own deadline.
    Retries go on until the delivery timeout; then the record fails."""
    delivery_ms = max(2 * LINGER_MS + 2, int(delivery_timeout_s * 1000))
    return {
        "delivery_timeout_ms": delivery_ms,
        # Two attempts fit (the client requires linger + request timeout <= delivery timeout).
        "request_timeout_ms": min(30_000, (delivery_ms - LINGER_MS) // 2),
        "max_block_ms": delivery_ms,  # send() waiting for the topic's metadata (the broker down)
    }


class KafkaBus(Bus):
    def __init__(self, settings) -> None:
        self._settings = settings
        self._common = {"bootstrap_servers": settings.kafka_bootstrap.split(","), "security_protocol": settings.kafka_security_protocol}
        # Explicit, not the client's default: fusion proves its largest record fits this (merc.pipeline.state_size).
        self._sizes = {"max_request_size": settings.kafka_max_request_bytes}
        if settings.kafka_sasl_mechanism:
            self._common.update(
                sasl_mechanism=settings.kafka_sasl_mechanism,
                sasl_plain_username=settings.kafka_sasl_username,
                sasl_plain_password=settings.kafka_sasl_password,
            )
        if settings.kafka_ssl_cafile:
            self._common["ssl_cafile"] = settings.kafka_ssl_cafile

    def producer(self) -> Producer:
        timeouts = producer_timeouts(self._settings.kafka_delivery_timeout_s)
        # Not idempotent: an idempotent kafka-python producer treats one refused record (too large, not
        # authorised) as fatal and fails every later send, so one bad request would take an encoder down.
        # Fusion drops a duplicate utterance, so a retried send needs no broker-side dedup; one request
        # in flight keeps a conversation's records in order across retries.
        return _KafkaProducer(KafkaProducer(acks="all", linger_ms=LINGER_MS, enable_idempotence=False,
                                            max_in_flight_requests_per_connection=1, **timeouts, **self._sizes, **self._common))

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        # Its records are acknowledged by commit_transaction, which raises when one failed.
        producer = KafkaProducer(transactional_id=transactional_id, acks="all", linger_ms=LINGER_MS, **self._sizes, **self._common)
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


def _failure(topic: str, error: Exception) -> str:
    text = str(error)  # kafka-python's errors mostly name their class already
    if type(error).__name__ not in text:
        text = f"{type(error).__name__}: {text}"
    return f"{topic}: the broker did not accept the record: {text}"


class _KafkaDelivery(Delivery):
    def __init__(self, topic: str, future, deadline: float) -> None:
        self._topic = topic
        self._future = future
        self._deadline = deadline

    def wait(self, timeout_s: float | None = None) -> None:
        timeout = max(0.0, self._deadline - time.monotonic()) if timeout_s is None else timeout_s
        try:
            self._future.get(timeout=timeout)
        except KafkaError as e:  # refused, expired after the delivery timeout, or not done in time
            raise DeliveryFailed(_failure(self._topic, e)) from e


class _KafkaProducer(Producer):
    def __init__(self, producer: KafkaProducer) -> None:
        self._p = producer
        self._timeout_s = producer.config["delivery_timeout_ms"] / 1000

    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> Delivery:
        # The deadline counts from here: send() itself may block on the topic's metadata.
        deadline = time.monotonic() + self._timeout_s + EXPIRY_GRACE_S
        try:
            future = self._p.send(topic, key=key, value=value, headers=list(headers), partition=partition)
        except KafkaError as e:  # no metadata within max_block_ms, a record over max_request_size, closed
            raise DeliveryFailed(_failure(topic, e)) from e
        return _KafkaDelivery(topic, future, deadline)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Push out what is buffered; says nothing about whether it was accepted (Delivery.wait does)."""
        try:
            self._p.flush(timeout=timeout_s)
        except KafkaError as e:
            raise DeliveryFailed(f"records still unsent after {timeout_s:g} s: {e}") from e

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
