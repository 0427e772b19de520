import numpy as np

from merc.pipeline.results import UtteranceResult
from merc.store import Store


def result(seq, speaker="a", label="joy", revision=0):
    return UtteranceResult(
        tenant="t", conversation_id="c", sequence=seq, speaker=speaker, speaker_index=0, start_ms=0, end_ms=10,
        revision=revision, event_id=f"e{seq}.{revision}", label=label, confidence=0.5, probabilities=[1 / 7] * 7,
        sentiment="neutral", sentiment_probabilities=[0.2, 0.6, 0.2], prediction_set=[label], prediction_set_coverage=0.9,
        modalities=["text"], weights=[1.0], missing=[], degraded=False, fused=np.arange(4, dtype=np.float32) + seq,
    )


def test_upsert_is_idempotent_and_keeps_the_latest_revision(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.upsert([result(0), result(1)])
    store.upsert([result(0), result(1)])
    store.upsert([result(1, label="anger", revision=1)])
    rows = store.conversation("t", "c")
    assert [(r.sequence, r.revision, r.label) for r in rows] == [(0, 0, "joy"), (1, 1, "anger")]
    np.testing.assert_array_equal(rows[1].fused, np.arange(4, dtype=np.float32) + 1)


def test_analysed_is_the_stored_results_modalities_and_revision(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.upsert([result(0), result(1, revision=2)])
    got = store.analysed("t", "c", 1)
    assert (got.conversation_id, got.sequence, got.modalities, got.revision) == ("c", 1, ["text"], 2)
    assert store.analysed("t", "c", 5) is None
    assert store.analysed("other", "c", 1) is None  # another tenant's utterance is not this one


def test_before_returns_the_last_k_strictly_earlier_oldest_first(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.upsert([result(i) for i in range(6)])
    assert [r.sequence for r in store.before("t", "c", 5, 3)] == [2, 3, 4]
    assert store.before("t", "c", 0, 3) == []
    assert store.conversation("other", "c") == []


def speaker_queries(store):
    """A speaker's last utterance before a sequence, and first appearances: what the context cache reads back."""
    store.upsert([result(i, speaker="ab"[i % 3 == 0]) for i in range(7)])  # b at 0, 3, 6
    assert store.speaker_before("t", "c", "b", 6).sequence == 3
    assert store.speaker_before("t", "c", "b", 0) is None and store.speaker_before("t", "c", "z", 6) is None
    assert store.first_appearances("t", "c") == {"b": 0, "a": 1}
    assert store.first_appearances("u", "c") == {}  # another tenant's conversation of the same id
    assert [r.sequence for r in store.before("t", "c", None, 2)] == [5, 6]  # the last ones


def test_speaker_queries(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    speaker_queries(store)
