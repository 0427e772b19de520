"""An in-process bus with Kafka's semantics where MERC relies on them:
keyed partitioning, per-group committed offsets, and transactions whose
records and offsets become visible together."""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable

from merc.bus.base import (
    Bus,
    Consumer,
    ConsumerSpec,
    Delivered,
    Delivery,
    Headers,
    Message,
    Producer,
    TopicPartition,
    TransactionalProducer,
)


class MemoryBus(Bus):
    def __init__(self, partitions: int = 3) -> None:
        self._default_partitions = partitions
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = defaultdict(dict)
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._refused: dict[str, str] = {}  # topic -> why the "broker" refuses its records

    def refuse(self, topic: str, reason: str = "refused by the broker") -> None:
        """Refuse every record a plain producer sends to ``topic`` from now on (what a broker does
        to an unauthorised or oversized record, or an outage past the delivery timeout): nothing is
        appended and the send's Delivery fails. For tests of what callers do then."""
        with self._lock:
            self._refused[topic] = reason

    def accept(self, topic: str) -> None:
        """Undo ``refuse``."""
        with self._lock:
            self._refused.pop(topic, None)

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        with self._lock:
            self._logs.setdefault(topic, [[] for _ in range(partitions or self._default_partitions)])

    def partitions(self, topic: str) -> int:
        self.create_topic(topic)
        return len(self._logs[topic])

    def partition_for(self, topic: str, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions(topic)

    def _append(self, records: list[tuple[str, bytes | None, bytes | None, Headers, int | None]]) -> None:
        with self._lock:
            for topic, key, value, headers, partition in records:
                p = self.partition_for(topic, key) if partition is None else partition
                log = self._logs[topic][p]
                log.append(Message(topic, key, value, headers, p, len(log), int(time.time() * 1000)))
            self._arrived.notify_all()

    def _commit_offsets(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            self._committed[group].update(offsets)

    def producer(self) -> Producer:
        return _MemoryProducer(self)

    def transactional_producer(self, transactional_id: str) -> TransactionalProducer:
        return _MemoryTransactionalProducer(self)

    def consumer(self, spec: ConsumerSpec) -> Consumer:
        return _MemoryConsumer(self, spec)

    def read_partition(self, topic: str, partition: int) -> Iterable[Message]:
        self.create_topic(topic)
        with self._lock:
            return list(self._logs[topic][partition])

    def messages(self, topic: str) -> list[Message]:
        """Every record of a topic, partition by partition (for tests and embedded output)."""
        self.create_topic(topic)
        with self._lock:
            return [m for log in self._logs[topic] for m in log]


class _MemoryProducer(Producer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> Delivery:
        with self._bus._lock:
            refused = self._bus._refused.get(topic)
            if refused is None:
                self._bus._append([(topic, key, value, tuple(headers), partition)])
        return Delivered(None if refused is None else f"{topic}: {refused}")

    def flush(self, timeout_s: float = 30.0) -> None:
        pass

    def close(self) -> None:
        pass


class _MemoryTransactionalProducer(TransactionalProducer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._pending: list[tuple[str, bytes | None, bytes | None, Headers, int | None]] | None = None

    def begin(self) -> None:
        if self._pending is not None:
            raise RuntimeError("a transaction is already open")
        self._pending = []

    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> Delivery:
        if self._pending is None:
            raise RuntimeError("send outside a transaction")
        self._pending.append((topic, key, value, tuple(headers), partition))
        return Delivered()  # what counts is the commit

    def commit(self, offsets: dict[TopicPartition, int], consumer: Consumer) -> None:
        if self._pending is None:
            raise RuntimeError("no open transaction")
        with self._bus._lock:
            self._bus._append(self._pending)
            assert isinstance(consumer, _MemoryConsumer)
            if consumer.group_id is not None:
                self._bus._commit_offsets(consumer.group_id, offsets)
        self._pending = None

    def abort(self) -> None:
        self._pending = None

    def flush(self, timeout_s: float = 30.0) -> None:
        pass

    def close(self) -> None:
        self._pending = None


class _MemoryConsumer(Consumer):
    """One consumer owns every partition of its topics (a group of one)."""

    def __init__(self, bus: MemoryBus, spec: ConsumerSpec) -> None:
        self._bus = bus
        self.group_id = spec.group_id
        self._assigned: list[TopicPartition] = []
        for topic in spec.topics:
            self._assigned += [(topic, p) for p in range(bus.partitions(topic))]
        committed = bus._committed[spec.group_id] if spec.group_id else {}
        self._position = {tp: committed.get(tp, 0) for tp in self._assigned}
        if not spec.from_beginning:
            self._position = {tp: len(bus._logs[tp[0]][tp[1]]) for tp in self._assigned}
        if spec.on_assign:
            spec.on_assign(list(self._assigned))

    def poll(self, timeout_ms: int = 100, max_records: int = 500) -> list[Message]:
        deadline = time.monotonic() + timeout_ms / 1000
        with self._bus._arrived:
            while True:
                out: list[Message] = []
                for tp in self._assigned:
                    log = self._bus._logs[tp[0]][tp[1]]
                    batch = log[self._position[tp] : self._position[tp] + max_records - len(out)]
                    self._position[tp] += len(batch)
                    out += batch
                    if len(out) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._bus._arrived.wait(remaining)

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.group_id is not None:
            self._bus._commit_offsets(self.group_id, offsets)

    def assignment(self) -> list[TopicPartition]:
        return list(self._assigned)

    def lag(self, since: dict[TopicPartition, int] | None = None) -> dict[TopicPartition, int]:
        with self._bus._lock:
            return {tp: len(self._bus._logs[tp[0]][tp[1]]) - (since or {}).get(tp, self._position[tp]) for tp in self._assigned}

    def close(self) -> None:
        pass
