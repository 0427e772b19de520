"""The fusion loop on the in-process bus and SQLite: order, exactly-once, replay, dead letters."""

import numpy as np
import pytest

from merc.bus.base import ConsumerSpec
from merc.bus.memory import MemoryBus
from merc.pipeline.fusion import FusionProcessor
from merc.runtime.config import Settings
from merc.store import Store
from merc.v1 import common_pb2, events_pb2
from unit.fakes import TinyInference

TEXT, AUDIO = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO


def embedding(conv, seq, speaker, modality=TEXT, expected=(TEXT,)):
    rng = np.random.default_rng(hash((conv, seq, modality)) % 2**32)
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant="t", conversation_id=conv, sequence=seq, speaker=speaker),
        modality=modality,
        vector=rng.normal(size=16).astype(np.float32).tolist(),
        expected_modalities=list(expected),
        sent_at_ms=1,
    )


def publish(bus, e, topic="merc.embeddings.text"):
    bus.producer().send(topic, e.utterance.conversation_id.encode(), e.SerializeToString())


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
    assert rows[4].speaker_moods.keys() == {"x", "y"} and rows[4].conversation_mood["utterances"] == 5


def test_crash_before_commit_replays_to_identical_events_without_duplicates(parts, tmp_path):
    bus, store, settings = parts
    for seq in range(6):
        publish(bus, embedding("a", seq, "xy"[seq % 3 == 0]))

    # Reference: a clean run on its own bus and store.
    ref_bus, ref_store = MemoryBus(partitions=3), Store(f"sqlite:///{tmp_path / 'ref.db'}")
    ref_store.migrate()
    for m in bus.messages("merc.embeddings.text"):
        ref_bus.producer().send(m.topic, m.key, m.value)
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
