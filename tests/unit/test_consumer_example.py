"""examples/consumer.py against what MERC really publishes: fusion's events (with a revision) and an
erasure's tombstones on the in-process bus, mixed with foreign records, fed to the example's view."""

import importlib.util
import sys
from pathlib import Path

import pytest

from merc.bus.memory import MemoryBus
from merc.bus.topics import EMOTIONS, conversation_key, parse_conversation_key
from merc.pipeline.events import SCHEMA
from merc.runtime import privacy
from merc.runtime.config import Settings
from merc.store import Store
from unit.test_fusion_processor import AUDIO, TEXT, Clock, embedding, publish, run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consumer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("merc_consumer_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


consumer = load_example()


def test_the_example_names_what_merc_publishes():
    assert consumer.SCHEMA == SCHEMA
    assert consumer.TOPIC == Settings().topic(EMOTIONS)
    for key in (conversation_key("t", "c"), conversation_key("t", "c\x00x"), b"committed", None, b"\xff\x00"):
        assert consumer.conversation_of(key) == parse_conversation_key(key)


@pytest.fixture
def published(tmp_path):
    """merc.emotions after fusion emitted conversation "a" (utterance 0 degraded, then revised by its late
    audio; utterance 1), conversation "b", then "b" was erased; foreign records written in between."""
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    store.migrate()
    bus, settings, clock = MemoryBus(partitions=3), Settings(join_window_ms=200, fusion_instance="test"), Clock()
    topic = settings.topic(EMOTIONS)
    publish(bus, embedding("a", 0, "x", TEXT, expected=(TEXT, AUDIO)))
    publish(bus, embedding("b", 0, "x"))
    fusion = run(bus, store, settings, steps=1, clock=clock)
    clock.now_ms += settings.join_window_ms
    fusion.step(poll_ms=0)  # "a"#0 released degraded at its deadline
    foreign = bus.producer()
    foreign.send(topic, conversation_key("t", "a"), b"committed")  # no headers: what the Kafka bus test once left there
    foreign.send(topic, conversation_key("t", "a"), embedding("a", 5, "x").SerializeToString(),
                 (("schema", b"merc.v1.ModalityEmbedding"), ("tenant", b"t")))
    publish(bus, embedding("a", 0, "x", AUDIO, expected=(TEXT, AUDIO)), topic="merc.embeddings.audio")
    publish(bus, embedding("a", 1, "y"))
    fusion.step(poll_ms=0)  # "a"#0 revision 1, "a"#1
    assert privacy.erase(store, bus.producer(), settings, "t", "b") == 1
    return bus.messages(topic)


def test_latest_revisions_are_held_foreign_records_skipped_and_tombstones_erase(published):
    view = consumer.EmotionView()
    outcomes = [view.handle(m.key, m.value, m.headers) for m in published]
    kinds = [o.kind for o in outcomes]
    assert kinds.count(consumer.SKIPPED) == 2  # b"committed", and the record of another schema
    assert {o.reason for o in outcomes if o.kind == consumer.SKIPPED} == {"no schema header", "schema merc.v1.ModalityEmbedding"}
    assert kinds.count(consumer.REVISION) == 1 and kinds.count(consumer.ERASED) == 1
    [a0, a1] = view.latest("t", "a")
    assert (a0.utterance.sequence, a0.revision, a0.degraded, list(a0.modalities)) == (0, 1, False, [TEXT, AUDIO])
    assert (a1.utterance.sequence, a1.revision) == (1, 0)
    assert view.latest("t", "b") == [] and view.conversations() == [("t", "a")]

    # Delivered again (a consumer resuming from older offsets): what it holds is stale, what was erased is
    # erased again by the tombstone that follows it on the same partition; the view ends up the same.
    again = [view.handle(m.key, m.value, m.headers) for m in published]
    assert {o.kind for o in again if o.conversation == ("t", "a")} == {consumer.STALE}
    assert [e.revision for e in view.latest("t", "a")] == [1, 0] and view.conversations() == [("t", "a")]


def test_an_older_revision_after_a_newer_one_is_stale(published):
    decode = consumer.EmotionView()
    first = [m for m in published if m.value is not None and m.header("schema") == SCHEMA
             and decode.handle(m.key, m.value, m.headers).event.utterance.sequence == 0
             and consumer.conversation_of(m.key) == ("t", "a")]
    assert len(first) == 2  # "a"#0: revision 0, then 1
    view = consumer.EmotionView()
    assert [view.handle(m.key, m.value, m.headers).kind for m in reversed(first)] == [consumer.EVENT, consumer.STALE]
    assert view.latest("t", "a")[0].revision == 1


def test_one_tenant_only(published):
    view = consumer.EmotionView(tenant="someone-else")
    outcomes = [view.handle(m.key, m.value, m.headers) for m in published]
    assert {o.kind for o in outcomes} == {consumer.SKIPPED} and view.conversations() == []
    assert consumer.EmotionView(tenant="t").conversations() == []


def test_records_that_are_not_events_never_raise():
    view = consumer.EmotionView()
    key = conversation_key("t", "a")
    cases = [
        (key, b"committed", ()),
        (key, b"\x08\xff\xff not a protobuf", (("schema", SCHEMA), ("tenant", b"t"))),
        (key, b"", (("schema", SCHEMA),)),  # no tenant header
        (b"no-nul", None, ()),  # a tombstone under a key that is not a conversation's
        (key, None, (("tenant", b"mallory"),)),  # a tombstone whose header names another tenant
        (None, None, None),
    ]
    assert [view.handle(*c).kind for c in cases] == [consumer.SKIPPED] * len(cases)
    # An event whose tenant header is not its own tenant.
    from merc.v1 import common_pb2, events_pb2

    event = events_pb2.EmotionEvent(utterance=common_pb2.UtteranceRef(tenant="t", conversation_id="a")).SerializeToString()
    assert view.handle(key, event, (("schema", SCHEMA), ("tenant", b"u"))).kind == consumer.SKIPPED
    assert view.handle(key, event, (("schema", SCHEMA), ("tenant", b"t"))).kind == consumer.EVENT
