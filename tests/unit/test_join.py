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


def test_too_many_waiting_utterances_release_the_oldest_at_once_as_overflow():
    j = Join(window_ms=1000, max_pending=3)
    for seq in range(5):
        j.add(emb(seq, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    released = j.release(now_ms=0)  # long before any deadline
    assert [(r.entry.ref.sequence, r.outcome, r.missing) for r in released] == [(0, "overflow", ["audio"]), (1, "overflow", ["audio"])]
    state = j.dirty_states(now_ms=0)[("t", "c1")]
    assert sum(not e.emitted for e in state.entries) == 3
    # The rest wait for their deadline as before, in order.
    assert [r.entry.ref.sequence for r in j.release(now_ms=1000)] == [2, 3, 4]


def test_a_restored_state_over_the_limit_releases_its_excess():
    big = Join(window_ms=1000, max_pending=10)
    for seq in range(6):
        big.add(emb(seq, TEXT, expected=(TEXT, AUDIO)), now_ms=0)
    state = big.snapshot(("t", "c1"), now_ms=0)
    small = Join(window_ms=1000, max_pending=2)
    small.restore(("t", "c1"), state)
    assert [r.outcome for r in small.release(now_ms=0)] == ["overflow"] * 4


class CountingJoin(Join):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.examined = []

    def _release(self, key, conv, now_ms):
        self.examined.append(key)
        return super()._release(key, conv, now_ms)


def test_a_step_examines_only_conversations_that_changed_or_are_due():
    j = CountingJoin(window_ms=1000)
    for i in range(1000):
        j.add(emb(0, TEXT, conv=f"idle{i}"), now_ms=0)
    assert len(j.release(now_ms=0)) == 1000 and len(j.dirty_states(now_ms=0)) == 1000
    j.examined.clear()
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO), conv="busy"), now_ms=10)
    assert j.release(now_ms=10) == [] and j.examined == [("t", "busy")]
    assert j.next_deadline_ms() == 1010
    j.examined.clear()
    assert j.release(now_ms=500) == [] and j.examined == []  # nothing changed, nothing due
    [r] = j.release(now_ms=1010)
    assert r.outcome == "deadline" and j.examined == [("t", "busy")]
    assert j.next_deadline_ms() is None
    assert list(j.dirty_states(now_ms=1010)) == [("t", "busy")]  # only what changed is snapshotted


def test_idle_conversations_leave_in_order_of_last_activity_and_waiting_ones_stay():
    j = Join(window_ms=100)
    j.add(emb(0, TEXT, conv="old"), now_ms=0)
    j.add(emb(0, TEXT, conv="newer"), now_ms=500)
    j.add(emb(1, TEXT, conv="old"), now_ms=600)  # activity moves "old" behind "newer"
    j.add(emb(0, TEXT, expected=(TEXT, AUDIO), conv="waiting"), now_ms=50)
    j.release(now_ms=600)
    assert j.idle(now_ms=1000, idle_ms=450) == [("t", "newer")]
    j.release(now_ms=10_000)  # "waiting" reaches its deadline
    assert sorted(j.idle(now_ms=10_000, idle_ms=450)) == [("t", "old"), ("t", "waiting")]
    assert len(j) == 0


def test_restored_conversations_are_evicted_by_their_recorded_activity():
    j = Join(window_ms=100)
    for conv, at in (("late", 900), ("early", 100)):
        j.add(emb(0, TEXT, conv=conv), now_ms=at)
    j.release(now_ms=1000)
    states = j.dirty_states(now_ms=1000)
    states[("t", "late")].updated_at_ms, states[("t", "early")].updated_at_ms = 900, 100
    k = Join(window_ms=100)
    for key in (("t", "late"), ("t", "early")):
        k.restore(key, states[key])
    assert k.idle(now_ms=1000, idle_ms=500) == [("t", "early")]
