"""A consumer of MERC's events (examples/README.md, "Consuming events").

    python examples/consumer.py --bootstrap 127.0.0.1:19092 [--topic merc.emotions] [--tenant T] [--group G]

What is on ``merc.emotions`` (ARCHITECTURE.md, "Data on the wire"):

- events: value a ``merc.v1.EmotionEvent``, key ``tenant \\0 conversation id``, headers ``schema``
  (``merc.v1.EmotionEvent``), ``tenant`` (the tenant inside the event) and ``traceparent``. Fusion
  writes them in Kafka transactions, so read with ``isolation.level=read_committed``: an aborted
  attempt is never an event.
- revisions: an utterance is published when its modalities have arrived or its join deadline
  passed, then again with ``revision + 1`` when a modality arrives after that (``MERC_EMIT_REVISIONS``,
  on by default). Each revision has its own ``event_id``; the highest revision is the answer.
- tombstones: ``EraseConversation`` and ``merc retention`` publish a null value under the
  conversation's key (headers ``tenant`` and ``erased: 1``): drop everything held for it.
- anything else (a record without the ``schema`` header, another schema) is not an event: skip it.

``EmotionView`` holds those rules and no Kafka: feed it records from any client (tests/unit feed it
bytes); ``consume`` is the Kafka loop (kafka-python, MERC's own client).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from merc.v1 import events_pb2

log = logging.getLogger("merc-consumer")

SCHEMA = b"merc.v1.EmotionEvent"  # the `schema` header of every event
TOPIC = "merc.emotions"  # MERC_TOPIC_PREFIX (default "merc") + ".emotions"

# Outcomes of one record
EVENT = "event"  # the first event held for its utterance
REVISION = "revision"  # a higher revision replaced the one held
STALE = "stale"  # a revision at or below the one held (a redelivery, or out of date): ignored
ERASED = "erased"  # a tombstone: the conversation's events are dropped
SKIPPED = "skipped"  # not an event for this consumer; `reason` says why


@dataclass(frozen=True)
class Outcome:
    kind: str
    reason: str = ""
    event: events_pb2.EmotionEvent | None = None
    conversation: tuple[str, str] | None = None  # (tenant, conversation id) of an event or erasure


def conversation_of(key: bytes | None) -> tuple[str, str] | None:
    """(tenant, conversation id) from a record key, or None when the key is not ``tenant \\0 conversation``."""
    try:
        tenant, conversation_id = (key or b"").decode().split("\x00", 1)
    except (UnicodeDecodeError, ValueError):
        return None
    return tenant, conversation_id


class EmotionView:
    """The latest revision of each utterance, per conversation, from the records it is given.

    ``tenant`` keeps one tenant's records and skips the rest (by header, without decoding them)."""

    def __init__(self, tenant: str | None = None) -> None:
        self.tenant = tenant
        self._held: dict[tuple[str, str], dict[int, events_pb2.EmotionEvent]] = {}

    def handle(self, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> Outcome:
        found = {name: v for name, v in headers or ()}  # the last of a repeated header wins, as in Kafka's lastHeader
        tenant = found.get("tenant")
        tenant = tenant.decode(errors="replace") if tenant is not None else None
        if value is None:
            return self._erase(key, tenant)
        schema = found.get("schema")
        if schema != SCHEMA:
            return Outcome(SKIPPED, "no schema header" if schema is None else f"schema {schema.decode(errors='replace')}")
        if tenant is None:
            return Outcome(SKIPPED, "no tenant header")
        if self.tenant is not None and tenant != self.tenant:
            return Outcome(SKIPPED, "another tenant")
        try:
            event = events_pb2.EmotionEvent.FromString(value)
        except Exception as e:  # protobuf's DecodeError; a consumer must outlive any foreign record
            return Outcome(SKIPPED, f"not an EmotionEvent: {e}")
        ref = event.utterance
        if ref.tenant != tenant:
            return Outcome(SKIPPED, "the tenant header differs from the event's tenant")
        conversation = (ref.tenant, ref.conversation_id)
        utterances = self._held.setdefault(conversation, {})
        before = utterances.get(ref.sequence)
        if before is not None and before.revision >= event.revision:
            return Outcome(STALE, event=event, conversation=conversation)
        utterances[ref.sequence] = event
        return Outcome(EVENT if before is None else REVISION, event=event, conversation=conversation)

    def _erase(self, key: bytes | None, tenant: str | None) -> Outcome:
        conversation = conversation_of(key)
        if conversation is None:
            return Outcome(SKIPPED, "a tombstone whose key is not a conversation key")
        if tenant is not None and tenant != conversation[0]:
            return Outcome(SKIPPED, "a tombstone whose tenant header differs from its key's tenant")
        if self.tenant is not None and conversation[0] != self.tenant:
            return Outcome(SKIPPED, "another tenant")
        self._held.pop(conversation, None)
        return Outcome(ERASED, conversation=conversation)

    def latest(self, tenant: str, conversation_id: str) -> list[events_pb2.EmotionEvent]:
        """The latest revision of each utterance of a conversation, in utterance order."""
        utterances = self._held.get((tenant, conversation_id), {})
        return [utterances[s] for s in sorted(utterances)]

    def conversations(self) -> list[tuple[str, str]]:
        return sorted(self._held)


def describe(outcome: Outcome) -> str | None:
    """One line for what a record changed, or None when it changed nothing worth printing."""
    if outcome.kind == ERASED:
        return "erased {}/{}".format(*outcome.conversation)
    if outcome.kind in (EVENT, REVISION):
        e = outcome.event
        ref = e.utterance
        return (f"{ref.tenant}/{ref.conversation_id}#{ref.sequence} r{e.revision} {e.label} {e.confidence:.2f}"
                + (" degraded" if e.degraded else ""))
    return None


def consume(view: EmotionView, bootstrap: str, topic: str = TOPIC, group: str | None = None,
            on_outcome: Callable[[Outcome], None] = lambda o: None, stop: Callable[[], bool] = lambda: False,
            **client) -> None:
    """Feed the topic to ``view`` until ``stop()``; ``client``: more KafkaConsumer settings (security).

    Without ``group`` it reads every partition from the beginning and commits nothing: the view lives
    in memory, so it is rebuilt from the topic at each start. With ``group`` it commits after each
    batch it handled; a batch redelivered after a crash is harmless (a revision already held is stale)."""
    from kafka import KafkaConsumer, TopicPartition  # imported here: EmotionView needs no Kafka client

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group, isolation_level="read_committed",
                             auto_offset_reset="earliest", enable_auto_commit=False, **client)
    try:
        if group is None:  # no group, no subscription: take every partition
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not parts:
                raise SystemExit(f"topic {topic} not found on {bootstrap}")
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
        else:
            consumer.subscribe([topic])
        while not stop():
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    outcome = view.handle(r.key, r.value, r.headers)
                    if outcome.kind == SKIPPED:
                        log.warning("skipped %s[%d]@%d: %s", r.topic, r.partition, r.offset, outcome.reason)
                    on_outcome(outcome)
            if group is not None:
                consumer.commit()
    finally:
        consumer.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--topic", default=TOPIC)
    p.add_argument("--tenant", help="read only this tenant's events")
    p.add_argument("--group", help="a consumer group: commit offsets and resume there")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def show(outcome: Outcome) -> None:
        line = describe(outcome)
        if line:
            print(line, flush=True)

    try:
        consume(EmotionView(args.tenant), args.bootstrap, args.topic, args.group, on_outcome=show)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
