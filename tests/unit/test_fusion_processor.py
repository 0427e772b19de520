"""The fusion loop on the in-process bus and SQLite: order, exactly-once, replay, dead letters, isolation of bad records."""

import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from merc.bus.base import ConsumerSpec
from merc.bus.memory import MemoryBus
from merc.bus.topics import conversation_key
from merc.pipeline.fusion import IDLE_CHECK_MS, MAX_TRIES, FusionProcessor
from merc.runtime.config import Settings
from merc.store import Store, StoreUnavailable
from merc.v1 import common_pb2, events_pb2
from unit.fakes import TEXT_DIM, TinyInference

TEXT, AUDIO = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO


def embedding(conv, seq, speaker, modality=TEXT, expected=(TEXT,)):
    rng = np.random.default_rng(hash((conv, seq, modality)) % 2**32)
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant="t", conversation_id=conv, sequence=seq, speaker=speaker),
        modality=modality,
        vector=rng.normal(size=TEXT_DIM if modality == TEXT else 128).astype(np.float32).tolist(),  # TinyInference's sizes
        expected_modalities=list(expected),
        sent_at_ms=1,
    )


def publish(bus, e, topic="merc.embeddings.text"):
    ref = e.utterance
    bus.producer().send(topic, conversation_key(ref.tenant, ref.conversation_id), e.SerializeToString(), (("tenant", ref.tenant.encode()),))


def events(bus):
    return [events_pb2.EmotionEvent.FromString(m.value) for m in bus.messages("merc.emotions")]


@pytest.fixture
def parts(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    store.migrate()
    return MemoryBus(partitions=3), store, Settings(join_window_ms=200, fusion_instance="test")


class Clock:
    """Milliseconds that move only when a test says so: deadlines without sleeping."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def run(bus, store, settings, steps=3, clock=None):
    p = FusionProcessor(bus, store, TinyInference(), settings, clock=clock or Clock())
    p.open()
    for _ in range(steps):
        p.step(poll_ms=0)
    return p


def test_one_event_per_utterance_in_order_with_context_and_rows(parts):
    bus, store, settings = parts
    for conv in ("a", "b"):
        for seq in range(5):
            publish(bus, embedding(conv, seq, "xy"[seq % 2]))
    run(bus, store, settings)
    evs = events(bus)
    assert len(evs) == 10
    for conv in ("a", "b"):
        seqs = [e.utterance.sequence for e in evs if e.utterance.conversation_id == conv]
        assert seqs == list(range(5))
    for e in evs:
        assert abs(sum(e.probabilities) - 1) < 1e-5 and e.label in e.prediction_set
        assert list(e.modalities) == [TEXT] and not e.degraded and e.revision == 0
    assert len({e.event_id for e in evs}) == 10
    rows = store.conversation("t", "a")
    assert [r.sequence for r in rows] == list(range(5))
    assert rows[4].speaker_moods.keys() == {"x"} and rows[4].conversation_mood["utterances"] == 5


def test_crash_before_commit_replays_to_identical_events_without_duplicates(parts, tmp_path):
    bus, store, settings = parts
    for seq in range(6):
        publish(bus, embedding("a", seq, "xy"[seq % 3 == 0]))

    # Reference: a clean run on its own bus and store.
    ref_bus, ref_store = MemoryBus(partitions=3), Store(f"sqlite:///{tmp_path / 'ref.db'}")
    ref_store.migrate()
    for m in bus.messages("merc.embeddings.text"):
        ref_bus.producer().send(m.topic, m.key, m.value, m.headers)
    run(ref_bus, ref_store, settings)

    crashing = FusionProcessor(bus, store, TinyInference(), settings)
    crashing.open()
    crashing._producer.commit = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash"))
    with pytest.raises(RuntimeError):
        crashing.step(poll_ms=0)
    assert events(bus) == []  # the transaction never committed
    assert len(store.conversation("t", "a")) == 6  # but the rows were written

    run(bus, store, settings)
    got, want = events(bus), events(ref_bus)
    assert [e.utterance.sequence for e in got] == list(range(6))
    for g, w in zip(got, want, strict=True):
        assert g.event_id == w.event_id
        np.testing.assert_allclose(g.probabilities, w.probabilities, rtol=0, atol=1e-6)


def test_pending_join_state_survives_a_restart(parts):
    bus, store, settings = parts
    publish(bus, embedding("a", 0, "x", TEXT, expected=(TEXT, AUDIO)))
    first = run(bus, store, settings, steps=1)
    assert events(bus) == []
    first.close()
    publish(bus, embedding("a", 0, "x", AUDIO, expected=(TEXT, AUDIO)), topic="merc.embeddings.audio")
    second = FusionProcessor(bus, store, TinyInference(), settings)
    second.open()
    second.step(poll_ms=0)
    [e] = events(bus)
    assert not e.degraded and list(e.missing_modalities) == []


def test_deadline_emits_degraded_and_late_modality_revises(parts):
    bus, store, settings = parts
    publish(bus, embedding("a", 0, "x", TEXT, expected=(TEXT, AUDIO)))
    clock = Clock()
    p = run(bus, store, settings, steps=1, clock=clock)
    assert events(bus) == []  # within the join window: waiting for the audio
    clock.now_ms += settings.join_window_ms
    p.step(poll_ms=0)
    [e] = events(bus)
    assert e.degraded and list(e.missing_modalities) == [AUDIO]
    publish(bus, embedding("a", 0, "x", AUDIO, expected=(TEXT, AUDIO)), topic="merc.embeddings.audio")
    p.step(poll_ms=0)
    e0, e1 = events(bus)
    assert e1.revision == 1 and not e1.degraded and e1.event_id != e0.event_id
    assert store.conversation("t", "a")[0].revision == 1


def test_poison_message_goes_to_the_dead_letter_topic_and_the_rest_flows(parts):
    bus, store, settings = parts
    bus.producer().send("merc.embeddings.text", b"a", b"\xff\x00garbage")
    bus.producer().send("merc.embeddings.text", b"a", events_pb2.ModalityEmbedding().SerializeToString())
    publish(bus, embedding("a", 0, "x"))
    run(bus, store, settings)
    dlq = bus.messages("merc.dlq")
    assert len(dlq) == 2
    reasons = sorted(m.header("reason").decode() for m in dlq)
    assert "not a ModalityEmbedding" in reasons[0] or "conversation_id is empty" in reasons[0]
    assert len(events(bus)) == 1
    # The bad records' offsets were committed with the transaction: nothing replays.
    c = bus.consumer(ConsumerSpec(["merc.embeddings.text"], group_id=settings.fusion_group))
    assert c.poll(timeout_ms=0) == []


class PickyStore(Store):
    """A store that refuses some conversations' rows (as PostgreSQL refuses data it cannot hold), or is down."""

    def __init__(self, url: str, refuse: str = "", outages: int = 0) -> None:
        super().__init__(url)
        self.refuse, self.outages = refuse, outages

    def upsert(self, results):
        if self.outages > 0:
            self.outages -= 1
            raise StoreUnavailable("the database is unavailable: OperationalError")
        if any(r.conversation_id == self.refuse for r in results):
            raise ValueError("refused: value too long for type character varying")
        super().upsert(results)


def run_until(p: FusionProcessor, done, timeout_s: float = 30.0) -> None:
    """The service's loop (failures, recoveries and all) on a thread, until ``done()`` or the timeout."""
    stop = threading.Event()
    worker = threading.Thread(target=p.run, args=(stop,), daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    worker.join(timeout=10)


def test_an_utterance_whose_row_the_store_keeps_refusing_is_dead_lettered_and_the_others_flow(tmp_path):
    store = PickyStore(f"sqlite:///{tmp_path / 'p.db'}", refuse="bad")
    store.migrate()
    bus, settings = MemoryBus(partitions=1), Settings(join_window_ms=200, fusion_instance="test")
    publish(bus, embedding("bad", 0, "x"))
    publish(bus, embedding("good", 0, "y"))
    p = FusionProcessor(bus, store, TinyInference(), settings, pause=lambda s: None)
    run_until(p, lambda: bus.messages("merc.dlq") and events(bus))
    [dead] = bus.messages("merc.dlq")
    reason = dead.header("reason").decode()
    assert f"failed {MAX_TRIES} fusion steps" in reason and "ValueError: refused" in reason
    assert dead.header("source") == b"merc.embeddings.text" and dead.header("tenant") == b"t"
    assert events_pb2.ModalityEmbedding.FromString(dead.value).utterance.conversation_id == "bad"  # replayable as it was
    assert [e.utterance.conversation_id for e in events(bus)] == ["good"]
    assert store.conversation("t", "good") and not store.conversation("t", "bad")
    assert p.counts["dlq"] == 1 and not p._strikes and not p._condemned  # done with, not remembered forever


def test_a_store_outage_is_retried_for_as_long_as_it_lasts_and_nothing_is_dead_lettered(tmp_path):
    store = PickyStore(f"sqlite:///{tmp_path / 'o.db'}", outages=MAX_TRIES + 2)
    store.migrate()
    bus, settings = MemoryBus(partitions=1), Settings(join_window_ms=200, fusion_instance="test")
    publish(bus, embedding("a", 0, "x"))
    p = FusionProcessor(bus, store, TinyInference(), settings, pause=lambda s: None)
    run_until(p, lambda: events(bus))
    assert store.outages == 0 and len(events(bus)) == 1 and bus.messages("merc.dlq") == []


class SlowStore(Store):
    """A store whose upsert waits until released, then succeeds or fails."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered, self.release, self.fail = threading.Event(), threading.Event(), False

    def upsert(self, results):
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise StoreUnavailable("the database is unavailable: OperationalError")
        super().upsert(results)


@pytest.mark.parametrize("fail", [False, True])
def test_the_transaction_commits_only_once_the_rows_are_stored(tmp_path, fail):
    """A step's events become visible only after its rows are stored, or never."""
    store = SlowStore(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    store.fail = fail
    bus, settings = MemoryBus(partitions=1), Settings(join_window_ms=0, fusion_instance="test")
    publish(bus, embedding("a", 0, "x"))
    p = run(bus, store, settings, steps=0)
    outcome = []
    stepper = threading.Thread(target=lambda: outcome.append(_step_outcome(p)))
    stepper.start()
    assert store.entered.wait(10)
    time.sleep(0.2)
    assert events(bus) == [] and not store.conversation("t", "a")
    store.release.set()
    stepper.join(10)
    if fail:
        assert outcome == ["StoreUnavailable"] and events(bus) == []
    else:
        assert outcome == [1] and len(events(bus)) == 1 and store.conversation("t", "a")


def _step_outcome(p: FusionProcessor):
    try:
        return p.step(poll_ms=0)
    except StoreUnavailable as e:
        return type(e).__name__


def test_the_lag_gauge_counts_from_the_committed_offsets_while_steps_fail(tmp_path):
    store = PickyStore(f"sqlite:///{tmp_path / 'l.db'}", outages=1)
    store.migrate()
    bus, settings = MemoryBus(partitions=1), Settings(join_window_ms=0, fusion_instance="test")
    for seq in range(3):
        publish(bus, embedding("a", seq, "x"))
    p = run(bus, store, settings, steps=0)
    with pytest.raises(StoreUnavailable):
        p.step(poll_ms=0)  # polled all three, committed none
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "merc.embeddings.text"}) == 3
    p.close()
    p.open()
    p.step(poll_ms=0)
    assert len(events(bus)) == 3
    p.step(poll_ms=0)
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "merc.embeddings.text"}) == 0


def test_an_erasure_in_one_tenant_leaves_the_same_conversation_id_of_another_alone(parts):
    bus, store, settings = parts
    for tenant in ("t", "u"):
        e = embedding("same", 0, "x", TEXT, expected=(TEXT, AUDIO))  # pending: waits for its audio
        e.utterance.tenant = tenant
        publish(bus, e)
    p = run(bus, store, settings, steps=1)
    bus.producer().send("merc.embeddings.text", conversation_key("t", "same"), None, (("tenant", b"t"),))
    p.step(poll_ms=0)
    states = {m.key: m.value for m in bus.messages("merc.fusion.state")}
    assert states[conversation_key("t", "same")] is None and states[conversation_key("u", "same")] is not None
    p.close()
    # After a restart the other tenant's pending utterance is still there, and completes.
    again = run(bus, store, settings, steps=0)
    late = embedding("same", 0, "x", AUDIO, expected=(TEXT, AUDIO))
    late.utterance.tenant = "u"
    publish(bus, late, topic="merc.embeddings.audio")
    again.step(poll_ms=0)
    [e] = events(bus)
    assert e.utterance.tenant == "u" and not e.degraded
    assert bus.messages("merc.emotions")[0].key == conversation_key("u", "same")


def test_rows_keep_one_mood_each_and_a_speaker_returning_after_many_others_continues_their_mood(parts):
    bus, store, settings = parts
    speakers = ["x"] + [f"s{i}" for i in range(40)] + ["x"]  # more than the context cache keeps in between
    for seq, speaker in enumerate(speakers):
        publish(bus, embedding("many", seq, speaker))
    run(bus, store, settings, steps=3)
    rows = store.conversation("t", "many")
    assert len(rows) == len(speakers)
    assert all(list(r.speaker_moods) == [r.speaker] for r in rows)  # linear in the speakers, not quadratic
    assert rows[-1].speaker_moods["x"]["utterances"] == 2 and rows[-2].speaker_moods["s39"]["utterances"] == 1
    assert rows[-1].conversation_mood["utterances"] == len(speakers)
    [last] = [e for e in events(bus) if e.utterance.sequence == len(speakers) - 1]
    assert last.speaker_mood.utterances == 2
    # After a restart the cache holds the latest rows only: an earlier speaker's mood is read back from the store.
    publish(bus, embedding("many", len(speakers), "s0"))
    run(bus, store, settings, steps=2)
    assert store.conversation("t", "many")[-1].speaker_moods["s0"]["utterances"] == 2


def test_too_many_waiting_utterances_are_released_degraded_not_dropped(parts):
    bus, store, _ = parts
    settings = Settings(join_window_ms=60_000, fusion_instance="test", max_pending_utterances=2)
    for seq in range(5):  # each waits for an audio embedding that never comes
        publish(bus, embedding("flood", seq, "x", TEXT, expected=(TEXT, AUDIO)))
    run(bus, store, settings, steps=1)
    evs = events(bus)
    assert [e.utterance.sequence for e in evs] == [0, 1, 2]
    assert all(e.degraded and list(e.missing_modalities) == [AUDIO] for e in evs)


def test_idle_conversations_leave_the_join_and_the_context_and_their_state_is_tombstoned(parts):
    bus, store, settings = parts
    clock = Clock()
    for i in range(50):
        publish(bus, embedding(f"c{i}", 0, "x"))
    p = run(bus, store, settings, clock=clock, steps=2)
    assert len(p.join) == 50 and len(p.context) == 50
    clock.now_ms += int(settings.conversation_idle_s * 1000) + IDLE_CHECK_MS + 1
    publish(bus, embedding("fresh", 0, "x"))
    p.step(poll_ms=0)
    assert len(p.join) == 1 and len(p.context) == 1
    states = {m.key: m.value for m in bus.messages("merc.fusion.state")}
    assert sum(v is None for v in states.values()) == 50 and states[conversation_key("t", "fresh")] is not None
    # A conversation that comes back after eviction continues from its stored rows.
    publish(bus, embedding("c7", 1, "x"))
    p.step(poll_ms=0)
    [back] = [r for r in store.conversation("t", "c7") if r.sequence == 1]
    assert back.speaker_moods["x"]["utterances"] == 2 and back.conversation_mood["utterances"] == 2
