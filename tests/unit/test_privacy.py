"""Pseudonymous speakers, erasure through the fusion processor, and retention (in-process bus, SQLite)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.manifest import Utterance
from merc.runtime import privacy, sealing
from merc.runtime.config import Settings
from merc.store import Store
from unit.test_store import result


def test_pseudonyms_are_stable_per_tenant_and_differ_across_tenants():
    a1, a2 = privacy.pseudonym("Joey", "acme", "s3cret"), privacy.pseudonym("Joey", "acme", "s3cret")
    b = privacy.pseudonym("Joey", "globex", "s3cret")
    assert a1 == a2 and a1 != b and a1.startswith("spk-") and "Joey" not in a1
    assert privacy.pseudonym("Joey", "acme", "other") != a1
    assert privacy.pseudonym("Joey", "acme", "") == "Joey"  # off without a secret
    assert privacy.pseudonym(a1, "acme", "s3cret") == a1  # never applied twice


def test_only_the_exact_pseudonym_format_passes_through():
    made = privacy.pseudonym("Joey", "acme", "s3cret")
    assert privacy.PSEUDONYM.fullmatch(made) and privacy.pseudonym(made, "acme", "s3cret") == made
    # Anything else is a speaker id, however much it looks like a pseudonym: it is pseudonymised.
    for speaker in ("spk-joey", "spk-", made.upper(), made + "0", made[:-1], " " + made, made + "\n", "spk-" + "g" * 20):
        out = privacy.pseudonym(speaker, "acme", "s3cret")
        assert out != speaker and privacy.PSEUDONYM.fullmatch(out), speaker


def lines(conversation: str):
    return [Utterance(line=i + 1, conversation=conversation, utterance=i, speaker=s, text=t)
            for i, (s, t) in enumerate([("Joey", "How you doin'?"), ("Rachel", "Oh, stop it."), ("Joey", "Fine, fine.")])]


def test_no_speaker_name_reaches_the_bus_or_the_store(tmp_path):
    keys = "k1:0123456789abcdef-secret"
    pipeline = EmbeddedPipeline(Settings(inference="local", pseudonym_secret="s3cret", embedding_keys=keys, torch_threads=1),
                                db_path=str(tmp_path / "m.db"))
    try:
        events = [pipeline.analyze_line(u).event for u in lines("c1")]
        speakers = [e.utterance.speaker for e in events]
        assert speakers[0] == speakers[2] != speakers[1] and all(s.startswith("spk-") for s in speakers)
        # Mood is still per speaker: the pseudonym is a stable identity.
        assert events[2].speaker_mood.utterances == 2
        for topic in pipeline.bus._logs:
            for m in pipeline.bus.messages(topic):
                assert b"Joey" not in (m.value or b"") and b"Rachel" not in (m.value or b"")
                if (topic.startswith("merc.embeddings.") or topic == "merc.fusion.state") and m.value is not None:
                    assert sealing.is_sealed(m.value), topic  # with a secret set, embeddings are sealed too
        rows = pipeline.store.conversation("default", "c1")
        assert not any("Joey" in json.dumps(r.speaker_moods) or r.speaker in ("Joey", "Rachel") for r in rows)
    finally:
        pipeline.close()


def test_erasure_deletes_rows_and_the_fusion_forgets_the_conversation(tmp_path):
    cfg = Settings(inference="local", torch_threads=1)
    pipeline = EmbeddedPipeline(cfg, db_path=str(tmp_path / "m.db"))
    try:
        for u in lines("c2"):
            pipeline.analyze_line(u)
        assert len(pipeline.store.conversation("default", "c2")) == 3
        producer = pipeline.bus.producer()
        assert privacy.erase(pipeline.store, producer, cfg, "default", "c2") == 3
        assert pipeline.store.conversation("default", "c2") == []
        assert privacy.erase(pipeline.store, producer, cfg, "default", "c2") == 0  # idempotent, publishes nothing
        pipeline.fusion.step(poll_ms=0)
        # merc.dlq gets the erasure's own tombstone, and nothing else: a tombstone is not a poison message.
        assert [(m.key, m.value) for m in pipeline.bus.messages(cfg.topic("dlq"))] == [(b"default\x00c2", None)]
        state = [m for m in pipeline.bus.messages(cfg.topic("fusion.state")) if m.key == b"default\x00c2"]
        assert state and state[-1].value is None  # the join state is tombstoned too
        # The conversation starts afresh: no context from the erased utterances.
        again = pipeline.analyze_line(Utterance(line=9, conversation="c2", utterance=3, speaker="Joey", text="Hi."))
        assert again.event is not None and again.event.speaker_mood.utterances == 1
    finally:
        pipeline.close()


def test_retention_erases_only_conversations_past_the_age(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    now = datetime.now(UTC)
    old, recent = result(0), result(0)
    old.conversation_id, old.emitted_at = "old", now - timedelta(days=40)
    recent.conversation_id, recent.emitted_at = "recent", now - timedelta(days=2)
    store.upsert([old, recent])
    from merc.bus.memory import MemoryBus

    bus = MemoryBus()
    cfg = Settings(retention_days=30)
    assert privacy.expire(store, bus.producer(), cfg, now) == [("t", "old")]
    assert store.conversation("t", "old") == [] and len(store.conversation("t", "recent")) == 1
    assert [m.key for m in bus.messages(cfg.topic("emotions"))] == [b"t\x00old"]  # scoped by tenant
    assert privacy.expire(store, bus.producer(), Settings(retention_days=0), now) == []  # 0 = keep forever
    store.close()


class FailingProducer:
    """A producer whose broker is gone: every send fails."""

    def send(self, *args, **kwargs):
        raise ConnectionError("broker down")

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def test_retention_publishes_tombstones_before_deleting_rows(tmp_path):
    """A run that cannot publish must delete nothing: rows deleted without their tombstones would leave the
    conversation's records on Kafka with nothing left to say it was ever there."""
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    now = datetime.now(UTC)
    old = result(0)
    old.conversation_id, old.emitted_at = "old", now - timedelta(days=40)
    store.upsert([old])
    cfg = Settings(retention_days=30)
    with pytest.raises(ConnectionError):
        privacy.expire(store, FailingProducer(), cfg, now)
    assert len(store.conversation("t", "old")) == 1  # still there: the next run erases it
    from merc.bus.memory import MemoryBus

    bus = MemoryBus()
    assert privacy.expire(store, bus.producer(), cfg, now) == [("t", "old")]
    assert store.conversation("t", "old") == []
    for topic in ("embeddings.text", "embeddings.audio", "embeddings.vision", "emotions", "dlq"):
        assert [(m.key, m.value) for m in bus.messages(cfg.topic(topic))] == [(b"t\x00old", None)], topic
    store.close()
