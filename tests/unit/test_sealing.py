"""Sealed embedding records (merc.runtime.sealing): per-tenant AES-GCM, bound to topic and key, rotation,
and the fusion loop opening them, dead-lettering what it cannot open and sealing what it writes."""

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from merc.bus.memory import MemoryBus
from merc.bus.topics import conversation_key
from merc.pipeline.encoder import Encoder
from merc.pipeline.fusion import MAX_TRIES, FusionProcessor
from merc.pipeline.modalities import TextPlugin
from merc.runtime import sealing
from merc.runtime.config import Settings
from merc.runtime.sealing import Sealing, Unopenable
from merc.store import Store
from merc.v1 import encoder_pb2, events_pb2, state_pb2
from unit.fakes import TinyInference
from unit.test_fusion_processor import AUDIO, TEXT, Clock, PickyStore, embedding, events, run_until

OLD = "k1:0123456789abcdef-old-secret"
NEW = "k2:fedcba9876543210-new-secret"
TOPIC = "merc.embeddings.text"
KEY = conversation_key("acme", "c1")


def test_seal_then_open_gives_the_plaintext_and_hides_it():
    s = Sealing.parse(OLD)
    plain = embedding("c1", 0, "x").SerializeToString()
    a, b = s.seal(TOPIC, KEY, plain), s.seal(TOPIC, KEY, plain)
    assert s.open(TOPIC, KEY, a) == plain == s.open(TOPIC, KEY, b)
    assert a != b  # a fresh nonce each time: equal embeddings are not equal records
    assert sealing.is_sealed(a) and plain not in a and plain[:16] not in a
    assert len(a) == len(plain) + len(sealing.MAGIC) + 1 + 2 + 12 + 16  # header, key id "k1", nonce, tag: nothing else


@pytest.mark.parametrize("topic, key", [
    (TOPIC, conversation_key("globex", "c1")),  # another tenant
    (TOPIC, conversation_key("acme", "c2")),  # another conversation
    ("merc.embeddings.audio", KEY),  # another topic
    ("merc.fusion.state", KEY),
])
def test_a_record_moved_to_another_tenant_conversation_or_topic_does_not_open(topic, key):
    s = Sealing.parse(OLD)
    value = s.seal(TOPIC, KEY, b"vector")
    with pytest.raises(Unopenable, match="authentication failed"):
        s.open(topic, key, value)


def test_an_altered_record_another_secret_or_a_bad_key_does_not_open():
    s = Sealing.parse(OLD)
    value = s.seal(TOPIC, KEY, b"vector")
    for i in (len(value) - 1, len(value) - 20, len(sealing.MAGIC) + 3):  # tag, ciphertext, nonce
        tampered = bytearray(value)
        tampered[i] ^= 1
        with pytest.raises(Unopenable, match="authentication failed"):
            s.open(TOPIC, KEY, bytes(tampered))
    with pytest.raises(Unopenable, match="authentication failed"):
        Sealing.parse("k1:another-secret-of-16-chars").open(TOPIC, KEY, value)  # same id, other secret
    with pytest.raises(Unopenable, match="truncated"):
        s.open(TOPIC, KEY, value[:20])
    with pytest.raises(Unopenable, match="not tenant"):
        s.open(TOPIC, b"no-nul-here", value)


def test_tenants_get_unrelated_keys():
    secret = b"0123456789abcdef"
    assert sealing.tenant_key(secret, "k1", "acme") != sealing.tenant_key(secret, "k1", "globex")
    assert sealing.tenant_key(secret, "k1", "acme") != sealing.tenant_key(secret, "k2", "acme")
    assert len(sealing.tenant_key(secret, "k1", "acme")) == 32  # AES-256


def test_rotation_the_first_key_seals_every_key_opens():
    before, during, after = Sealing.parse(OLD), Sealing.parse(f"{NEW},{OLD}"), Sealing.parse(NEW)
    old_record = before.seal(TOPIC, KEY, b"old")
    new_record = during.seal(TOPIC, KEY, b"new")
    assert during.open(TOPIC, KEY, old_record) == b"old" and during.open(TOPIC, KEY, new_record) == b"new"
    assert after.open(TOPIC, KEY, new_record) == b"new"  # sealed under the new key
    with pytest.raises(Unopenable, match="key id 'k1'.*not configured"):
        after.open(TOPIC, KEY, old_record)  # the old key removed: its records are gone for good
    # Step one of a rotation: the new key listed second opens new records without sealing with it yet.
    assert Sealing.parse(f"{OLD},{NEW}").open(TOPIC, KEY, new_record) == b"new"
    assert Sealing.parse(f"{OLD},{NEW}").seal(TOPIC, KEY, b"x")[len(sealing.MAGIC) + 1:][:2] == b"k1"


def test_off_passes_plain_values_and_refuses_sealed_ones_on_refuses_plain_ones():
    off, on = Sealing(), Sealing.parse(OLD)
    assert not off.on and off.seal(TOPIC, KEY, b"\x0aplain") == b"\x0aplain" == off.open(TOPIC, KEY, b"\x0aplain")
    with pytest.raises(Unopenable, match="MERC_EMBEDDING_KEYS is not set"):
        off.open(TOPIC, KEY, on.seal(TOPIC, KEY, b"x"))
    with pytest.raises(Unopenable, match="not sealed"):
        on.open(TOPIC, KEY, b"\x0aplain")  # nobody without the key can inject a record


@pytest.mark.parametrize("text, message", [
    ("0123456789abcdef0123", "entry 1: expected id:secret"),
    ("k1:short", "at least 16"),
    ("bad id:0123456789abcdef", "entry 1: expected id:secret"),
    (f"{OLD},k1:0123456789abcdef-again", "k1 appears twice"),
])
def test_bad_key_lists_are_refused_without_echoing_a_secret(text, message):
    with pytest.raises(ValueError, match=message) as e:
        Sealing.parse(text)
    assert "0123456789abcdef" not in str(e.value) and "short" not in str(e.value)


def test_settings_and_an_empty_list_mean_off():
    assert Sealing.parse("") == Sealing() and not Sealing.parse(" , ").on
    assert Sealing.parse(Settings(embedding_keys=f"{NEW}, {OLD}").embedding_keys).keys[0][0] == "k2"


# --- through the encoder and the fusion loop ---


def sealed_settings(keys=OLD, **kw):
    return Settings(join_window_ms=200, fusion_instance="test", tenant="t", embedding_keys=keys, **kw)


def publish_sealed(bus, e, keys=OLD, topic=TOPIC):
    ref = e.utterance
    key = conversation_key(ref.tenant, ref.conversation_id)
    bus.producer().send(topic, key, Sealing.parse(keys).seal(topic, key, e.SerializeToString()), (("tenant", ref.tenant.encode()),))


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 's.db'}")
    s.migrate()
    yield s
    s.close()


def test_the_encoder_seals_and_fusion_opens_end_to_end_and_a_guess_matches_nothing(store):
    """The attack: a topic reader encodes a guess with the shipped model and looks for its vector. Sealed, it finds nothing."""
    settings = sealed_settings()
    bus, inference = MemoryBus(partitions=1), TinyInference()
    encoder = Encoder(TextPlugin(inference, settings), bus.producer(), TOPIC, "t", sealing=Sealing.parse(settings.embedding_keys))
    request = encoder_pb2.EncodeRequest(text="1234")
    request.utterance.conversation_id, request.utterance.speaker = "c1", "x"
    encoder.encode(request)
    encoder.encode(request)  # the very same utterance again
    first, second = bus.messages(TOPIC)
    guess = encoder.embed(request)  # what the reader computes for the candidate "1234"
    vector_bytes = np.asarray(guess.vector, np.float32).tobytes()
    assert first.value != second.value
    for m in (first, second):
        assert sealing.is_sealed(m.value) and vector_bytes[:8] not in m.value and vector_bytes[-8:] not in m.value
        with pytest.raises(DecodeError):  # not a message at all without the key
            events_pb2.ModalityEmbedding.FromString(m.value)
    # Unsealed, the same guess is found byte for byte: what the sealing prevents.
    plain_bus = MemoryBus(partitions=1)
    Encoder(TextPlugin(inference, settings), plain_bus.producer(), TOPIC, "t").encode(request)
    assert vector_bytes in plain_bus.messages(TOPIC)[0].value

    p = FusionProcessor(bus, store, inference, settings, clock=Clock())
    p.open()
    p.step(poll_ms=0)
    assert [e.utterance.conversation_id for e in events(bus)] == ["c1"]  # the second copy is a duplicate
    assert bus.messages("merc.dlq") == []
    assert store.conversation("t", "c1")


def test_a_record_fusion_cannot_open_is_dead_lettered_with_its_reason_only(store):
    settings = sealed_settings()
    bus = MemoryBus(partitions=1)
    publish_sealed(bus, embedding("good", 0, "x"))
    publish_sealed(bus, embedding("rotated", 0, "x"), keys=NEW)  # a key this fusion lacks
    bus.producer().send(TOPIC, conversation_key("t", "plain"), embedding("plain", 0, "x").SerializeToString(), (("tenant", b"t"),))
    moved = bus.messages(TOPIC)[0]
    bus.producer().send(TOPIC, conversation_key("t", "moved"), moved.value, moved.headers)  # copied under another key
    p = FusionProcessor(bus, store, TinyInference(), settings, clock=Clock())
    p.open()
    p.step(poll_ms=0)
    assert [e.utterance.conversation_id for e in events(bus)] == ["good"]
    dead = {m.key: m for m in bus.messages("merc.dlq")}
    assert set(dead) == {conversation_key("t", c) for c in ("rotated", "plain", "moved")}
    assert "key id 'k2'" in dead[conversation_key("t", "rotated")].header("reason").decode()
    assert "not sealed" in dead[conversation_key("t", "plain")].header("reason").decode()
    assert "authentication failed" in dead[conversation_key("t", "moved")].header("reason").decode()
    for m in dead.values():
        assert m.header("source") == TOPIC.encode()
        reason = m.header("reason").decode()
        assert reason.isprintable() and len(reason) < 160  # a fixed sentence (and a key id): no byte of the value
    assert dead[conversation_key("t", "rotated")].value == bus.messages(TOPIC)[1].value  # unchanged: replayable once the key is back


def test_fusion_without_keys_dead_letters_sealed_records(store):
    bus = MemoryBus(partitions=1)
    publish_sealed(bus, embedding("c1", 0, "x"))
    p = FusionProcessor(bus, store, TinyInference(), Settings(join_window_ms=200, fusion_instance="test"), clock=Clock())
    p.open()
    p.step(poll_ms=0)
    [dead] = bus.messages("merc.dlq")
    assert "MERC_EMBEDDING_KEYS is not set" in dead.header("reason").decode() and events(bus) == []


def test_the_join_state_is_sealed_and_survives_a_restart(store):
    settings = sealed_settings()
    bus = MemoryBus(partitions=1)
    publish_sealed(bus, embedding("c1", 0, "x", TEXT, expected=(TEXT, AUDIO)))
    first = FusionProcessor(bus, store, TinyInference(), settings, clock=Clock())
    first.open()
    first.step(poll_ms=0)
    [state] = bus.messages("merc.fusion.state")
    assert sealing.is_sealed(state.value)
    opened = state_pb2.ConversationJoinState.FromString(Sealing.parse(OLD).open("merc.fusion.state", state.key, state.value))
    assert opened.entries[0].embeddings[0].utterance.conversation_id == "c1"
    first.close()
    publish_sealed(bus, embedding("c1", 0, "x", AUDIO, expected=(TEXT, AUDIO)), topic="merc.embeddings.audio")
    second = FusionProcessor(bus, store, TinyInference(), settings, clock=Clock())
    second.open()
    second.step(poll_ms=0)
    [e] = events(bus)
    assert not e.degraded  # the text half came back from the sealed state
    # A fusion holding other keys skips the state it cannot open (logged), never crashes on it.
    third = FusionProcessor(bus, store, TinyInference(), sealed_settings(NEW), clock=Clock())
    third.open()
    third.step(poll_ms=0)


def test_a_condemned_utterance_is_dead_lettered_sealed_for_its_source_topic(tmp_path):
    store = PickyStore(f"sqlite:///{tmp_path / 'p.db'}", refuse="bad")
    store.migrate()
    settings, bus = sealed_settings(), MemoryBus(partitions=1)
    publish_sealed(bus, embedding("bad", 0, "x"))
    p = FusionProcessor(bus, store, TinyInference(), settings, pause=lambda s: None)
    run_until(p, lambda: bus.messages("merc.dlq"))
    [dead] = bus.messages("merc.dlq")
    assert f"failed {MAX_TRIES} fusion steps" in dead.header("reason").decode()
    assert sealing.is_sealed(dead.value)
    plain = Sealing.parse(OLD).open(TOPIC, dead.key, dead.value)  # replayable to its source topic as it is
    assert events_pb2.ModalityEmbedding.FromString(plain).utterance.conversation_id == "bad"
