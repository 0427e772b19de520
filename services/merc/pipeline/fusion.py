"""The fusion loop, independent of the bus, store and inference implementations.

Each step is one transaction, in three parts: ingest (decode the polled records into the join),
transform (release what is due, infer), commit (upsert rows, then produce events, the join state
and the consumed offsets in one Kafka transaction). A consumer reading merc.emotions with
read_committed sees every event once; a crash anywhere replays from the last committed
transaction, and since inference is deterministic the replay writes identical rows and events.

No record may stall the loop, since a step that fails replays the same records: a record that
cannot be used is dead-lettered when decoded, and an utterance whose own data makes a step fail
(not an outage of the store or of Triton, which is retried for as long as it lasts) is
dead-lettered once it has failed ``MAX_TRIES`` steps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError

from merc.bus import Bus, Consumer, Message, TopicPartition, topics
from merc.bus.base import ConsumerSpec, Headers
from merc.inference import InferenceClient, InferenceUnavailable
from merc.pipeline import state_size
from merc.pipeline.context import ContextCache
from merc.pipeline.events import EMBEDDING_SCHEMA, SCHEMA, to_event
from merc.pipeline.join import MODALITY_NAMES, Join, Release
from merc.pipeline.predict import FUSION_MODEL, EmotionPredictor
from merc.pipeline.results import UtteranceResult, ref_problem
from merc.runtime import monitoring, telemetry
from merc.runtime.sealing import UNSEALED, Sealing, Unopenable
from merc.store import Store, StoreUnavailable
from merc.v1 import events_pb2, state_pb2

log = logging.getLogger(__name__)

IDLE_CHECK_MS = 60_000  # at most; half the idle time when that is shorter
RECOVERY_PAUSE_S = 1.0
# Steps an utterance may fail on its own data before it is dead-lettered. More than one, so a
# failure that only looked like the record's fault (a restart mid-write) gets another chance.
MAX_TRIES = 3
OUTAGES = (InferenceUnavailable, StoreUnavailable)

UtteranceKey = tuple[str, str, int]  # tenant, conversation, sequence
T = TypeVar("T")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class DeadLetter:
    """A record for merc.dlq: the original key, value and headers, plus why and where from."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    reason: str
    source: str

    def record_headers(self) -> Headers:
        return tuple(self.headers) + (("reason", self.reason.encode()), ("source", self.source.encode()))


@dataclass
class _Batch:
    """What one poll brought in, beyond what the join took: offsets to commit, dead letters, erasures."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    erased: list[tuple[str, str]] = field(default_factory=list)
    condemned: list[UtteranceKey] = field(default_factory=list)  # dead-lettered utterances, done with once committed


class PoisonMessage(ValueError):
    pass


class RecordFailed(RuntimeError):
    """Utterances failed a step on their own data; the step is retried without committing anything."""


def _brief(value: bytes | str, limit: int = 80) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return repr(text if len(text) <= limit else text[:limit] + "...")


def decode_embedding(m: Message, dims: dict[str, int] | None = None, sealing: Sealing = UNSEALED) -> events_pb2.ModalityEmbedding:
    """The record's embedding, or PoisonMessage saying why fusion cannot use it.

    ``dims``: the vector size the fusion model takes per modality; ``sealing``: how the value was
    sealed (merc.runtime.sealing). Anything that would fail the step on every replay must die here,
    or the partition stalls.
    """
    if m.value is None:
        raise PoisonMessage("empty value")
    try:
        plain = sealing.open(m.topic, m.key, m.value)
    except Unopenable as exc:  # its reason names no byte of the value
        raise PoisonMessage(str(exc)) from None
    try:
        e = events_pb2.ModalityEmbedding.FromString(plain)
    except DecodeError as exc:
        raise PoisonMessage(f"not a ModalityEmbedding: {exc}") from exc
    ref = e.utterance
    if not ref.conversation_id:
        raise PoisonMessage("utterance.conversation_id is empty")
    problem = ref_problem(ref)
    if problem:
        raise PoisonMessage(problem)
    tenant = m.header("tenant")
    if tenant is None:
        raise PoisonMessage("no tenant header")
    if tenant != ref.tenant.encode():
        raise PoisonMessage(f"the tenant header {_brief(tenant)} differs from utterance.tenant {_brief(ref.tenant)}")
    if not e.vector:
        raise PoisonMessage("vector is empty")
    if e.modality == 0:
        raise PoisonMessage("modality is unspecified")
    if e.modality not in MODALITY_NAMES:
        raise PoisonMessage(f"modality {e.modality} is not text, audio or vision")
    name = MODALITY_NAMES[e.modality]
    if dims and name in dims:
        if len(e.vector) != dims[name]:
            raise PoisonMessage(f"the {name} vector has {len(e.vector)} values; the fusion model takes {dims[name]}")
        if len(plain) > state_size.max_embedding_bytes(name, dims[name]):  # the join state's size rests on it
            raise PoisonMessage(f"the record is {len(plain)} bytes; the largest valid {name} embedding is "
                                f"{state_size.max_embedding_bytes(name, dims[name])}")
    if not all(math.isfinite(v) and abs(v) <= 1e6 for v in e.vector):
        raise PoisonMessage("vector has NaN, infinite or out-of-range (above 1e6) values")
    return e


def _failure(e: BaseException) -> str:
    """An exception as a dead letter's reason: its type and first line, bounded (drivers append whole statements)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}"


def _utterance_key(r: Release | UtteranceResult) -> UtteranceKey:
    if isinstance(r, UtteranceResult):
        return r.tenant, r.conversation_id, r.sequence
    ref = r.entry.ref
    return ref.tenant, ref.conversation_id, ref.sequence


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
        # Embedding values and join states are sealed per tenant when keys are set (merc.runtime.sealing).
        self.sealing = Sealing.parse(settings.embedding_keys)
        shapes = inference.input_shapes(FUSION_MODEL)
        k, hidden = shapes["CTX_FUSED"]
        self.context = ContextCache(store, k)
        self.predictor = EmotionPredictor(inference, self.context, settings.mood_decay, k, hidden)
        self.join = Join(settings.join_window_ms, settings.emit_revisions, settings.max_pending_utterances)
        state_size.check(settings, self.predictor.dims)  # before a record too large for Kafka could stall a partition
        self.owned: set[int] = set()
        self.ready = threading.Event()
        self.counts = {"events": 0, "dlq": 0, "transactions": 0}
        self._last_idle_check = 0
        self._idle_ms = int(settings.conversation_idle_s * 1000)
        self._consumer: Consumer | None = None
        self._producer = None
        self._source_partition: dict[tuple[str, str], int] = {}
        # The trace context each joined record carried, per utterance, until its emission (merc.runtime.telemetry).
        self._traces = telemetry.TraceCarrier()
        # Kept across recoveries (they outlive the consumer): steps each utterance failed on its own
        # data, the ones to dead-letter when next released, and the committed position per partition.
        self._strikes: dict[UtteranceKey, int] = {}
        self._condemned: dict[UtteranceKey, str] = {}
        self._committed: dict[TopicPartition, int] = {}

    # --- partition ownership ---

    def _on_assign(self, parts: list[TopicPartition]) -> None:
        self.owned = {p for _, p in parts}
        self.context.clear()
        self.join.clear()
        self._source_partition.clear()
        self._traces.clear()
        # The consumer starts again from the committed offsets: the first record polled from each partition tells them.
        self._committed.clear()
        restored = 0
        for p in sorted(self.owned):
            latest: dict[bytes, bytes | None] = {}
            for m in self.bus.read_partition(self.state_topic, p):
                latest[m.key] = m.value
            for raw, value in latest.items():
                if value is not None and self._restore(raw, value, p):
                    restored += 1
        log.info("assigned partitions %s, restored the join state of %d conversations", sorted(self.owned), restored)
        self.ready.set()

    def _restore(self, raw: bytes, value: bytes, partition: int) -> bool:
        """One conversation's join state; a record this service did not write is skipped, never fatal."""
        key = topics.parse_conversation_key(raw)
        try:
            if key is None:
                raise ValueError("its key is not tenant\\0conversation")
            plain = self.sealing.open(self.state_topic, raw, value)
            self.join.restore(key, state_pb2.ConversationJoinState.FromString(plain))
        except Exception as e:
            log.warning("skipped a join state record on %s[%d]: %s", self.state_topic, partition, _failure(e))
            return False
        self._source_partition[key] = partition
        return True

    def _on_revoke(self, parts: list[TopicPartition]) -> None:
        self.ready.clear()

    def _partition(self, key: tuple[str, str]) -> int | None:
        """The state partition: the one the conversation's embeddings came from."""
        return self._source_partition.get(key)

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
        for m in messages:
            self._committed.setdefault((m.topic, m.partition), m.offset)
        # Behind the committed offsets, not the polled ones: while steps fail, the lag shows it.
        monitoring.consumer_lag(self._consumer.lag(self._committed), self.topics)
        now = self.clock()
        batch = self._ingest(messages, now)
        releases = self._dead_letter_condemned(self.join.release(now), batch)
        tombstones = list(dict.fromkeys(batch.erased))
        if now - self._last_idle_check > min(IDLE_CHECK_MS, self._idle_ms // 2):
            self._last_idle_check = now
            tombstones += self._evict_idle(now)
        if not messages and not releases and not tombstones and not batch.dead:
            return 0
        spans = self._trace(releases, now)
        try:
            with spans.stage("inference"), monitoring.fusion_stage("inference"):
                results = self._predict(releases, now)
            events = self._events(results)
            self._commit(batch, results, events, tombstones, now, spans)
        except BaseException as e:
            spans.end(e)
            raise
        spans.end()
        self._committed.update(batch.offsets)
        monitoring.consumer_lag(self._consumer.lag(self._committed), self.topics)
        monitoring.conversations_held(len(self.join))
        self._account(batch, results)
        return len(results)

    def _evict_idle(self, now: int) -> list[tuple[str, str]]:
        """Idle conversations leave memory, join state and context alike; their state records get tombstones."""
        idle = self.join.idle(now, self._idle_ms)
        for key in idle:
            self.context.forget(*key)
        return idle

    def _ingest(self, messages: list[Message], now: int) -> _Batch:
        """Decode each record into the join (or the dead letters, or an erasure); nothing leaves the process."""
        batch = _Batch()
        for m in messages:
            batch.offsets[(m.topic, m.partition)] = m.offset + 1
            if m.value is None:  # an erasure (merc.runtime.privacy): forget the conversation
                key = topics.parse_conversation_key(m.key)
                tenant = m.header("tenant")
                if key is None or (tenant is not None and tenant != key[0].encode()):
                    batch.dead.append(self._poison(m, "an erasure tombstone whose key is not its tenant's conversation key"))
                    continue
                self.join.forget(key)
                self.context.forget(*key)
                self._traces.forget(*key)
                self._source_partition[key] = m.partition
                batch.erased.append(key)
                continue
            try:
                e = decode_embedding(m, self.predictor.dims, self.sealing)
                ref = e.utterance
                outcome = self.join.add(e, now)
            except PoisonMessage as exc:
                batch.dead.append(self._poison(m, str(exc)))
                continue
            except Exception as exc:  # the join is pure and in memory: what fails here fails at every replay
                batch.dead.append(self._poison(m, f"the join refused it: {_failure(exc)}"))
                continue
            self._source_partition[(ref.tenant, ref.conversation_id)] = m.partition
            monitoring.join_added(outcome)
            if outcome in ("pending", "late"):  # kept by the join: the emission continues this record's trace
                self._traces.remember((ref.tenant, ref.conversation_id, ref.sequence), m.headers)
        return batch

    def _poison(self, m: Message, reason: str) -> DeadLetter:
        return DeadLetter(m.key, m.value, tuple(m.headers), reason, m.topic)

    # --- utterances that fail on their own data ---

    def _dead_letter_condemned(self, releases: list[Release], batch: _Batch) -> list[Release]:
        """Releases to fuse; the condemned ones go to the dead letters, one record per embedding, as published."""
        keep = []
        for r in releases:
            reason = self._condemned.get(_utterance_key(r))
            if reason is None:
                keep.append(r)
                continue
            batch.condemned.append(_utterance_key(r))
            self._traces.take(_utterance_key(r))  # no span: it is not fused
            ref = r.entry.ref
            key = topics.conversation_key(ref.tenant, ref.conversation_id)
            for name, e in sorted(r.entry.embeddings.items()):
                headers = (("schema", EMBEDDING_SCHEMA), ("tenant", ref.tenant.encode()))
                source = self.settings.topic(topics.embeddings(name))
                # Sealed for its source topic, as an encoder would: a replay re-publishes it there.
                batch.dead.append(DeadLetter(key, self.sealing.seal(source, key, e.SerializeToString()), headers, reason, source))
        return keep

    def _isolate(self, items: Iterable[T], attempt: Callable[[T], object], error: Exception) -> None:
        """After a batch failed: try each item alone; strike the ones that fail, or re-raise if none does."""
        culprits = []
        for item in items:
            try:
                attempt(item)
            except OUTAGES:
                raise
            except Exception as e:
                culprits.append((_utterance_key(item), e))
        if not culprits:
            raise error  # only the batch as a whole failed: retry it
        for key, e in culprits:
            tries = self._strikes.get(key, 0) + 1
            self._strikes[key] = tries
            log.warning("utterance %s of a conversation of tenant %s failed fusion (%d of %d tries): %s",
                        key[2], key[0], tries, MAX_TRIES, _failure(e))
            if tries >= MAX_TRIES:
                self._condemned[key] = f"failed {tries} fusion steps: {_failure(e)}"
        raise RecordFailed(f"{len(culprits)} utterance(s) failed on their own data; retrying without them once condemned") from error

    def _predict(self, releases: list[Release], now: int) -> list[UtteranceResult]:
        try:
            return self.predictor.predict(releases, now)
        except OUTAGES:
            raise
        except Exception as e:
            self._isolate(releases, lambda r: self.predictor.predict([r], now), e)
            raise  # not reached: _isolate always raises

    def _events(self, results: list[UtteranceResult]) -> list[bytes]:
        try:
            return [to_event(r).SerializeToString() for r in results]
        except Exception as e:
            self._isolate(results, lambda r: to_event(r).SerializeToString(), e)
            raise

    def _upsert(self, results: list[UtteranceResult]) -> None:
        try:
            self.store.upsert(results)
        except OUTAGES:
            raise
        except Exception as e:
            self._isolate(results, lambda r: self.store.upsert([r]), e)
            raise

    def _commit(self, batch: _Batch, results: list[UtteranceResult], events: list[bytes], tombstones: list[tuple[str, str]],
                now: int, spans: telemetry.BatchSpans) -> None:
        """Rows, then in one Kafka transaction: dead letters, events, join state, tombstones and the consumed offsets."""
        with spans.stage("store"), monitoring.fusion_stage("store"):
            self._upsert(results)
        p = self._producer
        with spans.stage("transaction"), monitoring.fusion_stage("transaction"):
            p.begin()
            try:
                for d in batch.dead:
                    p.send(self.dlq_topic, d.key, d.value, d.record_headers())
                # Results come in the order of releases: the i-th event carries the i-th utterance's span.
                for i, (r, event) in enumerate(zip(results, events, strict=True)):
                    headers = spans.headers(i, (("schema", SCHEMA), ("tenant", r.tenant.encode())))
                    p.send(self.events_topic, topics.conversation_key(r.tenant, r.conversation_id), event, headers)
                for key, state in self.join.dirty_states(now).items():
                    raw = topics.conversation_key(*key)
                    value = self.sealing.seal(self.state_topic, raw, state.SerializeToString())
                    p.send(self.state_topic, raw, value, partition=self._partition(key))
                for key in tombstones:
                    p.send(self.state_topic, topics.conversation_key(*key), None, partition=self._source_partition.pop(key, None))
                p.commit(batch.offsets, self._consumer)
            except Exception:
                p.abort()
                raise

    def _account(self, batch: _Batch, results: list[UtteranceResult]) -> None:
        monitoring.emitted([r.confidence for r in results], len(batch.dead))
        for r in results:
            monitoring.event_latency(r.latency_ms, r.degraded, r.revision)
        self.counts["events"] += len(results)
        self.counts["dlq"] += len(batch.dead)
        self.counts["transactions"] += 1
        for key in [_utterance_key(r) for r in results] + batch.condemned:  # emitted or dead-lettered: done with
            self._strikes.pop(key, None)
            self._condemned.pop(key, None)
        for d in batch.dead:
            log.warning("dead-lettered a record from %s: %s", d.source, d.reason)

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
