"""`merc analyze` in embedded mode, with the real committed models."""

import json

import pytest

from merc.cli import main
from merc.pipeline.labels import LABELS


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    (d / "broken.wav").write_bytes(b"not audio")
    lines = [
        json.dumps({"conversation": "c", "utterance": 0, "speaker": "A", "text": "I can't believe you did this to me!"}),
        "{oops",
        json.dumps({"conversation": "c", "utterance": 1, "speaker": "B", "text": "Great, thanks a lot.", "audio": "missing.flac"}),
        json.dumps({"conversation": "c", "utterance": 2, "speaker": "A", "audio": "broken.wav"}),
        json.dumps({"conversation": "c", "utterance": 3, "speaker": "B", "text": "Okay."}),
    ]
    (d / "m.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["analyze", str(d / "m.jsonl"), "--out", str(d / "out.jsonl"), "--threads", "1"])
    return code, [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]


def test_every_line_gets_a_record_in_order(analysed):
    code, rows = analysed
    assert code == 1  # some lines could not produce an event
    assert len(rows) == 5
    assert rows[1] == {"line": 2, "label": None, "error": rows[1]["error"]} and "line 2" in rows[1]["error"]
    assert [r.get("utterance") for r in rows] == [0, None, 1, 2, 3]


def test_text_events_are_calibrated_distributions(analysed):
    _, rows = analysed
    for r in (rows[0], rows[4]):
        assert list(r["probs"]) == list(LABELS)
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
        assert r["label"] == max(r["probs"], key=r["probs"].get)
        assert r["confidence"] == pytest.approx(r["probs"][r["label"]], abs=1e-6)
        assert r["label"] in r["prediction_set"]
        assert r["modalities"] == ["text"] and r["weights"] == {"text": pytest.approx(1.0)}
        assert r["degraded"] is False
        assert {"speaker", "conversation"} <= set(r["mood"])


def test_unusable_modalities_are_missing_not_fatal(analysed):
    _, rows = analysed
    text_and_bad_audio = rows[2]
    assert text_and_bad_audio["label"] in LABELS and text_and_bad_audio["modalities"] == ["text"]
    assert text_and_bad_audio["degraded"] is True and any("audio" in e for e in text_and_bad_audio["errors"])
    audio_only = rows[3]
    assert audio_only["label"] is None and "audio" in audio_only["error"]


def test_context_is_causal_and_mood_accumulates(analysed):
    _, rows = analysed
    assert rows[4]["mood"]["conversation"]["utterances"] == 3  # utterances 0, 1 and 3 produced events
    assert rows[0]["mood"]["conversation"]["utterances"] == 1


def test_missing_manifest_is_a_usage_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
