import json

import pytest

from merc.analyze import manifest


def write(tmp_path, lines):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_parses_the_documented_format_with_relative_paths(tmp_path):
    p = write(
        tmp_path,
        [
            {"conversation": "d42", "utterance": 3, "speaker": "Joey", "text": "Great job.", "audio": "clips/a.flac",
             "frames": ["f/0.jpg", "f/1.jpg"], "video": "media/d42.mp4", "start_ms": 1200, "end_ms": 3400},
            {"conversation": "d42", "utterance": 4, "speaker": "Ross", "faces": ["faces/x.jpg"], "label": "Joy"},
        ],
    )
    a, b = list(manifest.read(p))
    assert (a.conversation, a.utterance, a.speaker, a.text) == ("d42", 3, "Joey", "Great job.")
    assert a.audio == tmp_path / "clips/a.flac" and a.frames[1] == tmp_path / "f/1.jpg"
    assert (a.start_ms, a.end_ms) == (1200, 3400)
    assert a.given == ["text", "audio", "vision"]
    assert b.given == ["vision"] and b.label == "joy" and b.text is None


def test_text_only_line_and_defaults(tmp_path):
    p = write(tmp_path, [{"text": "hi"}, {"text": "there"}])
    a, b = list(manifest.read(p))
    assert a.conversation == "m" and (a.utterance, b.utterance) == (0, 1)
    assert a.given == ["text"]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"text": 5}), "'text' must be a string"),
        (json.dumps({"utterance": -1, "text": "x"}), "'utterance' must be a non-negative integer"),
        (json.dumps({"utterance": "3", "text": "x"}), "'utterance' must be a non-negative integer"),
        (json.dumps({"frames": "a.jpg"}), "'frames' must be a list"),
        (json.dumps({"text": "x", "label": "bored"}), "label 'bored' is not one of"),
        (json.dumps({"text": "x", "start_ms": 5, "end_ms": 2}), "end_ms is before start_ms"),
    ],
)
def test_bad_lines_name_the_line_and_others_still_parse(tmp_path, line, fragment):
    p = write(tmp_path, [{"text": "ok"}, line, {"text": "still ok"}])
    items = list(manifest.read(p))
    assert len(items) == 3
    err = items[1]
    assert isinstance(err, manifest.ManifestError) and err.line == 2
    assert "line 2" in str(err) and fragment in str(err)
    assert items[2].text == "still ok"
