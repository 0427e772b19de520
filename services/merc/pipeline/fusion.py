"""The fusion loop, independent of the bus, store and inference implementations.

Each step is one transaction, in three parts: ingest (decode the polled records into the join),
transform (release what is due, infer), commit (upsert rows, then produce events, the join state
and the consumed offsets in one Kafka transaction). A
consumer reading merc.emotions with read_committed sees every event once; a
crash anywhere replays from the last committed transaction, and since inference
is deterministic the replay writes identical rows and events.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from merc.bus import Bus, Consumer, Message, TopicPartition, topics
from merc.bus.base import ConsumerSpec
from merc.inference import InferenceClient
from merc.pipeline.context import ContextCache
from merc.pipeline.events import SCHEMA, to_event
from merc.pipeline.join import MODALITY_NAMES, Join, Release
from merc.pipeline.predict import FUSION_MODEL, EmotionPredictor
from merc.pipeline.results import UtteranceResult
from merc.runtime import monitoring, telemetry
from merc.v1 import events_pb2, state_pb2

if TYPE_CHECKING:
    from merc.store import Store

log = logging.getLogger(__name__)

IDLE_CONVERSATION_MS = 15 * 60 * 1000
IDLE_CHECK_MS = 60_000
RECOVERY_PAUSE_S = 1.0


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Batch:
    """What one poll brought in, beyond what the join took: offsets to commit, dead letters, erasures."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    poison: list[tuple[Message, str]] = field(default_factory=list)
    erased: list[tuple[str, str]] = field(default_factory=list)


def _state_key(key: tuple[str, str]) -> bytes:
    return f"{key[0]}\x00{key[1]}".encode()


def _parse_state_key(raw: bytes) -> tuple[str, str]:
    tenant, conversation = raw.decode().split("\x00", 1)
    return tenant, conversation


class PoisonMessage(ValueError):
    pass


def decode_embedding(m: Message) -> events_pb2.ModalityEmbedding:
    if m.value is None:
        raise PoisonMessage("empty value")
    try:
        e = events_pb2.ModalityEmbedding.FromString(m.value)
    except DecodeError as exc:
        raise PoisonMessage(f"not a ModalityEmbedding: {exc}") from exc
    if not e.utterance.conversation_id:
        raise PoisonMessage("utterance.conversation_id is empty")
    if not e.vector:
        raise PoisonMessage("vector is empty")
    if e.modality == 0:
        raise PoisonMessage("modality is unspecified")
    if e.modality not in MODALITY_NAMES:
        raise PoisonMessage(f"modality {e.modality} is not text, audio or vision")
    # Anything that would make the step fail on every replay must die here, or the partition stalls.
    if not all(math.isfinite(v) and abs(v) <= 1e6 for v in e.vector):
        raise PoisonMessage("vector has NaN, infinite or out-of-range (above 1e6) values")
    ref = e.utterance
    if max(ref.sequence, ref.start_ms, ref.end_ms) > 2**31 - 1:
        raise PoisonMessage("utterance.sequence, start_ms or end_ms is beyond 2**31 - 1")
    return e


class FusionProcessor:
    def __init__(self, bus: Bus, store: Store, inference: InferenceClient, settings,
                 clock: Callable[[], int] = wall_clock_ms, pause: Callable[[float], object] = time.sleep) -> None:
        """``clock`` (milliseconds) drives the join's deadlines; ``pause`` waits before recovering. Tests pass fakes."""
        self.bus = bus
        self.clock = clock
        self.pause = pause
        self.store = store
        self.settings = settings
        self.topics = [settings.topic(t) for t in topics.EMBEDDINGS]
        self.state_topic = settings.topic(topics.FUSION_STATE)
        self.events_topic = settings.topic(topics.EMOTIONS)
        self.dlq_topic = settings.topic(topics.DLQ)
        shapes = inference.input_shapes(FUSION_MODEL)
        k, hidden = shapes["CTX_FUSED"]
        self.context = ContextCache(store, k)
        self.predictor = EmotionPredictor(inference, self.context, settings.mood_decay, k, hidden)
        self.join = Join(settings.join_window_ms, settings.emit_revisions)
        self.owned: set[int] = set()
        self.ready = threading.Event()
        self.counts = {"events": 0, "dlq": 0, "transactions": 0}
        self._last_idle_check = 0
        self._consumer: Consumer | None = None
        self._producer = None
        self._source_partition: dict[str, int] = {}
        # The trace context each joined record carried, per utterance, until its emission (merc.runtime.telemetry).
        self._traces = telemetry.TraceCarrier()

    # --- partition ownership ---

    def _on_assign(self, parts: list[TopicPartition]) -> None:
        self.owned = {p for _, p in parts}
        self.context.clear()
        self.join.clear()
        self._source_partition.clear()
        self._traces.clear()
        restored = 0
        for p in sorted(self.owned):
            latest: dict[bytes, bytes | None] = {}
            for m in self.bus.read_partition(self.state_topic, p):
                latest[m.key] = m.value
            for raw, value in latest.items():
                if value is not None:
                    key = _parse_state_key(raw)
                    self.join.restore(key, state_pb2.ConversationJoinState.FromString(value))
                    self._source_partition[key[1]] = p
                    restored += 1
        log.info("assigned partitions %s, restored the join state of %d conversations", sorted(self.owned), restored)
        self.ready.set()

    def _on_revoke(self, parts: list[TopicPartition]) -> None:
        self.ready.clear()

    def _partition(self, conversation_id: str) -> int | None:
        """The state partition: the one the conversation's embeddings came from."""
        return self._source_partition.get(conversation_id)

    # --- the loop ---

    def open(self) -> None:
        self._producer = self.bus.transactional_producer(f"merc-fusion-{self.settings.fusion_instance}")
        member = f"merc-fusion-{self.settings.fusion_instance}"
        self._consumer = self.bus.consumer(
            ConsumerSpec(
                self.topics,
                self.settings.fusion_group,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                # Static membership: a restarted instance takes its partitions back at
                # once instead of waiting out the dead member's session.
                extra={"group_instance_id": member},
            )
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.close()
        self._consumer = self._producer = None

    def run(self, stop: threading.Event) -> None:
        self.open()
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:
                    # Whatever failed, the transaction was not committed: rebuild the
                    # in-memory state from the last committed one and go on.
                    log.exception("fusion step failed; recovering from the last committed transaction")
                    monitoring.step_failed()
                    self.close()
                    self.pause(RECOVERY_PAUSE_S)
                    self.open()
        finally:
            self.close()

    def step(self, poll_ms: int = 100) -> int:
        """Consume, join, emit: one transaction. Returns the number of events emitted."""
        assert self._consumer is not None and self._producer is not None
        deadline = self.join.next_deadline_ms()
        if deadline is not None:
            poll_ms = max(0, min(poll_ms, deadline - self.clock()))
        messages = self._consumer.poll(timeout_ms=poll_ms)
        monitoring.consumer_lag(self._consumer.lag(), self.topics)
        now = self.clock()
        batch = self._ingest(messages, now)
        releases = self.join.release(now)
        tombstones = list(dict.fromkeys(batch.erased))
        if now - self._last_idle_check > IDLE_CHECK_MS:
            self._last_idle_check = now
            tombstones += self.join.idle(now, IDLE_CONVERSATION_MS)
        if not messages and not releases and not tombstones:
            return 0
        spans = self._trace(releases, now)
        try:
            with spans.stage("inference"), monitoring.fusion_stage("inference"):
                results = self.predictor.predict(releases, now)
            self._commit(batch, results, tombstones, now, spans)
        except BaseException as e:
            spans.end(e)
            raise
        spans.end()
        self._account(batch, results)
        return len(results)

    def _ingest(self, messages: list[Message], now: int) -> _Batch:
        """Decode each record into the join (or the dead letters, or an erasure); nothing leaves the process."""
        batch = _Batch()
        for m in messages:
            batch.offsets[(m.topic, m.partition)] = m.offset + 1
            if m.value is None:  # an erasure (merc.runtime.privacy): forget the conversation
                key = ((m.header("tenant") or b"").decode(errors="replace"), (m.key or b"").decode(errors="replace"))
                self.join.forget(key)
                self.context.forget(*key)
                self._traces.forget(*key)
                self._source_partition[key[1]] = m.partition
                batch.erased.append(key)
                continue
            try:
                e = decode_embedding(m)
            except PoisonMessage as exc:
                batch.poison.append((m, str(exc)))
                continue
            self._source_partition[e.utterance.conversation_id] = m.partition
            outcome = self.join.add(e, now)
            monitoring.join_added(outcome)
            if outcome in ("pending", "late"):  # kept by the join: the emission continues this record's trace
                ref = e.utterance
                self._traces.remember((ref.tenant, ref.conversation_id, ref.sequence), m.headers)
        return batch

    def _commit(self, batch: _Batch, results: list[UtteranceResult], tombstones: list[tuple[str, str]], now: int,
                spans: telemetry.BatchSpans) -> None:
        """Rows, then in one Kafka transaction: dead letters, events, join state, tombstones and the consumed offsets."""
        with spans.stage("store"), monitoring.fusion_stage("store"):
            self.store.upsert(results)
        p = self._producer
        with spans.stage("transaction"), monitoring.fusion_stage("transaction"):
            p.begin()
            try:
                for m, reason in batch.poison:
                    p.send(self.dlq_topic, m.key, m.value, tuple(m.headers) + (("reason", reason.encode()), ("source", m.topic.encode())))
                # Results come in the order of releases: the i-th event carries the i-th utterance's span.
                for i, r in enumerate(results):
                    headers = spans.headers(i, (("schema", SCHEMA), ("tenant", r.tenant.encode())))
                    p.send(self.events_topic, r.conversation_id.encode(), to_event(r).SerializeToString(), headers)
                for key, state in self.join.dirty_states(now).items():
                    p.send(self.state_topic, _state_key(key), state.SerializeToString(), partition=self._partition(key[1]))
                for key in tombstones:
                    p.send(self.state_topic, _state_key(key), None, partition=self._source_partition.pop(key[1], None))
                p.commit(batch.offsets, self._consumer)
            except Exception:
                p.abort()
                raise

    def _account(self, batch: _Batch, results: list[UtteranceResult]) -> None:
        monitoring.emitted([r.confidence for r in results], len(batch.poison))
        self.counts["events"] += len(results)
        self.counts["dlq"] += len(batch.poison)
        self.counts["transactions"] += 1
        for m, reason in batch.poison:
            log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)

    def _trace(self, releases: list[Release], now: int) -> telemetry.BatchSpans:
        """A span per released utterance (its parent rule: merc.runtime.telemetry); counts each join outcome."""
        spans = telemetry.BatchSpans("fusion utterance")
        for r in releases:
            ref, entry = r.entry.ref, r.entry
            monitoring.released(r.outcome, now - entry.first_arrival_ms)
            attributes = {"merc.tenant": ref.tenant, "merc.conversation_id": ref.conversation_id, "merc.utterance": ref.sequence,
                          "merc.revision": r.revision, "merc.join.outcome": r.outcome,
                          "merc.modalities": sorted(entry.embeddings), "merc.missing": list(r.missing)}
            spans.start(self._traces.take((ref.tenant, ref.conversation_id, ref.sequence)), entry.first_arrival_ms, now, attributes)
        return spans
