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


class Producer(abc.ABC):
    @abc.abstractmethod
    def send(self, topic: str, key: bytes, value: bytes | None, headers: Headers = (), partition: int | None = None) -> None:
        """Partition by key unless `partition` is given."""

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
