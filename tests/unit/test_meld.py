import pytest

from merc.data.meld import DataUnavailable, holdout_split, load_split
from merc.pipeline.labels import LABELS


@pytest.fixture(scope="module")
def splits():
    try:
        return load_split("train"), load_split("dev")
    except DataUnavailable as e:
        pytest.skip(f"MELD not available here: {e}")


def test_dialogues_are_grouped_ordered_and_labelled(splits):
    train, dev = splits
    assert sum(len(d) for d in train) == 9989 and sum(len(d) for d in dev) == 1109
    for d in train[:50]:
        idx = [u.index for u in d.utterances]
        assert idx == sorted(idx)
        assert all(0 <= u.emotion < len(LABELS) for u in d.utterances)
        assert d.utterances[0].speaker_index == 0


def test_no_dialogue_in_two_splits(splits):
    train, dev = splits
    kept, held = holdout_split(train, 0.1, seed=0)
    assert {d.key for d in kept}.isdisjoint({d.key for d in held})
    assert len(kept) + len(held) == len(train)
    assert {d.key for d in train}.isdisjoint({d.key for d in dev})


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataUnavailable, match="not found"):
        load_split("dev", root=tmp_path)
