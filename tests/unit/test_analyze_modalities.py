"""`merc analyze` (embedded mode, committed models) with each modality alone and all together."""

import json

import pytest
from samples import face_png as _face
from samples import voice_wav as _voice

from merc.cli import main
from merc.pipeline.labels import LABELS


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("modalities")
    (d / "voice.wav").write_bytes(_voice())
    (d / "face.png").write_bytes(_face())
    (d / "scene.png").write_bytes(_face(1))  # a frame in which no detector finds a face
    lines = [
        {"utterance": 0, "speaker": "A", "text": "You did what? That's amazing!"},
        {"utterance": 1, "speaker": "B", "audio": "voice.wav"},
        {"utterance": 2, "speaker": "A", "faces": ["face.png"]},
        {"utterance": 3, "speaker": "B", "text": "Great job.", "audio": "voice.wav", "faces": ["face.png", "face.png"]},
        {"utterance": 4, "speaker": "A", "text": "Fine.", "frames": ["scene.png"]},
    ]
    (d / "m.jsonl").write_text("".join(json.dumps({"conversation": "m", **x}) + "\n" for x in lines))
    code = main(["analyze", str(d / "m.jsonl"), "--out", str(d / "out.jsonl"), "--threads", "1"])
    assert code == 0
    return [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("i, used", [(0, ["text"]), (1, ["audio"]), (2, ["vision"]), (3, ["text", "audio", "vision"])])
def test_each_subset_gives_a_calibrated_event(rows, i, used):
    r = rows[i]
    assert r["modalities"] == used
    assert list(r["probs"]) == list(LABELS) and sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
    assert r["label"] in r["prediction_set"] and 0 < r["confidence"] <= 1
    assert set(r["weights"]) == set(used) and sum(r["weights"].values()) == pytest.approx(1, abs=1e-4)
    assert all(w > 0 for w in r["weights"].values())
    assert 0 <= r["incongruence"] <= 1
    if len(used) == 1:
        assert r["incongruence"] == 0


def test_a_frame_without_a_face_leaves_vision_missing_with_the_reason(rows):
    r = rows[4]
    assert r["modalities"] == ["text"] and r["degraded"] is True
    assert any("no face found" in e for e in r["errors"])
