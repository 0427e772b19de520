"""Bus interfaces shared by the Kafka and in-process implementations."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

TopicPartition = tuple[str, int]
Headers = tuple[tuple[str, bytes], ...]
AssignmentCallback = Callable[[list[TopicPartition]], None]


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes | None  # None is a tombstone
    headers: Headers = ()
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class DeliveryFailed(Exception):
    """The broker did not accept a record: it refused it, or did not acknowledge it within the
    producer's delivery timeout (an outage). The record may not be on the topic: whoever asked
    for it to be published must be told to retry, never that it was done."""


class Delivery(abc.ABC):
    """The outcome of one send. A record is published once ``wait`` returns, not before: a producer
    hands records to the broker in the background, and ``flush`` does not say whether they were accepted."""

    @abc.abstractmethod
    def wait(self, timeout_s: float | None = None) -> None:
        """Return once the broker has the record; raise DeliveryFailed if it refused it or if it is not
        acknowledged in time (``None``: the producer's own delivery timeout, counted from the send)."""


class Delivered(Delivery):
    """A delivery whose outcome is known when the send returns (the in-process bus, transactions)."""

    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure

    def wait(self, timeout_s: float | None = None) -> None:
        if self.failure is not None:
            raise DeliveryFailed(self.failure)


def wait_all(deliveries: Iterable[Delivery]) -> None:
    """Wait for every delivery (each within its own timeout); DeliveryFailed names the first failure."""
    for delivery in list(deliveries):
        delivery.wait()


class Producer(abc.ABC):
    @abc.abstractmethod
    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> Delivery:
        """Partition by key unless `partition` is given. Raises DeliveryFailed when the record cannot
        even be queued (e.g. no metadata for its topic within the delivery timeout); otherwise its
        Delivery says whether the broker accepted it."""

    @abc.abstractmethod
    def flush(self, timeout_s: float = 30.0) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Consumer(abc.ABC):
    @abc.abstractmethod
    def poll(self, timeout_ms: int = 100, max_records: int = 500) -> list[Message]: ...

    @abc.abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets outside a transaction."""

    @abc.abstractmethod
    def assignment(self) -> list[TopicPartition]: ...

    def lag(self, since: dict[TopicPartition, int] | None = None) -> dict[TopicPartition, int]:
        """Records between ``since`` (default: what poll returned) and the end of each assigned partition,
        where known (for monitoring only)."""
        return {}

    @abc.abstractmethod
    def close(self) -> None: ...


class TransactionalProducer(Producer):
    """Produce records and consumer offsets atomically (Kafka transactions, KIP-98/447)."""

    @abc.abstractmethod
    def begin(self) -> None: ...

    @abc.abstractmethod
    def commit(self, offsets: dict[TopicPartition, int], consumer: Consumer) -> None:
        """Commit the open transaction together with the consumer's next-offsets."""

    @abc.abstractmethod
    def abort(self) -> None: ...


@dataclass
class ConsumerSpec:
    topics: Sequence[str]
    group_id: str | None
    on_assign: AssignmentCallback | None = None
    on_revoke: AssignmentCallback | None = None
    read_committed: bool = True
    from_beginning: bool = True
    extra: dict = field(default_factory=dict)


class Bus(abc.ABC):
    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def transactional_producer(self, transactional_id: str) -> TransactionalProducer: ...

    @abc.abstractmethod
    def consumer(self, spec: ConsumerSpec) -> Consumer: ...

    @abc.abstractmethod
    def read_partition(self, topic: str, partition: int) -> Iterable[Message]:
        """Every committed record of one partition, from the start to the current end."""

    @abc.abstractmethod
    def partitions(self, topic: str) -> int: ...

    def close(self) -> None:  # an optional hook, so not abstract
        pass
