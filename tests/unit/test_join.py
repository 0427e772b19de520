from merc.pipeline.join import Join
from merc.v1 import common_pb2, events_pb2

TEXT, AUDIO, VISION = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO, common_pb2.MODALITY_VISION


def emb(seq, modality, expected=(TEXT,), conv="c1"):
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant="t", conversation_id=conv, sequence=seq, speaker="a"),
        modality=modality,
        vector=[0.1, 0.2],
        expected_modalities=list(expected),
    )


def test_complete_utterance_is_released_at_once():
    j = Join(window_ms=1000)
    j.add(emb(0, TEXT), now_ms=0)
    [r] = j.release(now_ms=0)
    assert r.outcome == "complete" and r.missing == [] and r.revision == 0


def test_missing_modality_waits_for_the_deadline_then_is_degraded():
    j = Join(window_ms=1000)
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    assert j.release(now_ms=999) == []
    [r] = j.release(now_ms=1000)
    assert r.outcome == "deadline" and r.missing == ["audio"]


def test_successor_waits_for_its_pending_predecessor():
    j = Join(window_ms=1000)
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    j.add(emb(1, TEXT), now_ms=10)
    assert j.release(now_ms=10) == []
    released = j.release(now_ms=1000)
    assert [r.entry.ref.sequence for r in released] == [0, 1]


def test_late_modality_yields_a_revision_and_duplicates_are_ignored():
    j = Join(window_ms=100)
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    assert j.release(now_ms=100)[0].revision == 0
    assert j.add(emb(0, AUDIO, expected=(TEXT, AUDIO)), now_ms=150) == "late"
    [r] = j.release(now_ms=150)
    assert r.outcome == "revision" and r.revision == 1 and r.missing == []
    assert j.add(emb(0, AUDIO, expected=(TEXT, AUDIO)), now_ms=160) == "duplicate"
    assert j.release(now_ms=200) == []


def test_no_revisions_when_disabled():
    j = Join(window_ms=100, emit_revisions=False)
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    j.release(now_ms=100)
    assert j.add(emb(0, AUDIO), now_ms=150) == "dropped"
    assert j.release(now_ms=200) == []


def test_state_snapshot_restores_pending_entries():
    j = Join(window_ms=1000)
    j.add(emb(0, TEXT, expected=(TEXT, VISION)), now_ms=5)
    states = j.dirty_states(now_ms=5)
    assert list(states) == [("t", "c1")]
    k = Join(window_ms=1000)
    k.restore(("t", "c1"), states[("t", "c1")])
    assert k.release(now_ms=500) == []
    k.add(emb(0, VISION, expected=(TEXT, VISION)), now_ms=600)
    [r] = k.release(now_ms=600)
    assert r.outcome == "complete" and set(r.entry.embeddings) == {"text", "vision"}
    assert j.dirty_states(now_ms=6) == {}


def test_conversations_are_independent():
    j = Join(window_ms=1000)
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO), conv="a"), now_ms=0)
    j.add(emb(0, TEXT, conv="b"), now_ms=0)
    assert [r.entry.ref.conversation_id for r in j.release(now_ms=1)] == ["b"]
