import json

import pytest

from merc.analyze import manifest
from merc.analyze.requests import encode_request, gateway_request, utterance_ref
from merc.pipeline.results import MAX_ID_CHARS, MAX_INT, ref_problem


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


# Values JSON reads but later code cannot take (protobuf fields, the store's columns): the line is refused, not the run.
@pytest.mark.parametrize(
    "obj, fragment",
    [
        ({"text": "bad \ud800"}, "'text' is not valid Unicode text"),
        ({"text": "x", "speaker": "\udc80"}, "'speaker' is not valid Unicode text"),
        ({"frames": ["ok.jpg", "\ud800.jpg"]}, "'frames' is not valid Unicode text"),
        ({"text": "x", "utterance": MAX_INT + 1}, f"'utterance' must be at most {MAX_INT}"),
        ({"text": "x", "end_ms": 2**64}, f"'end_ms' must be at most {MAX_INT}"),
        ({"text": "x", "conversation": "c" * (MAX_ID_CHARS + 1)}, f"'conversation' is longer than {MAX_ID_CHARS}"),
        ({"text": "x", "speaker": "a\x00b"}, "'speaker' contains a NUL"),
        ({"audio": "a\x00.wav"}, "'audio' holds a path with a NUL"),
        ({"text": "x", "utterance": -(10**4000)}, "must be a non-negative integer, got -1000"),  # and the message stays short
    ],
)
def test_values_later_code_cannot_take_are_line_errors(tmp_path, obj, fragment):
    p = write(tmp_path, [{"text": "ok"}, obj, {"text": "still ok"}])
    _, err, last = manifest.read(p)
    assert isinstance(err, manifest.ManifestError) and err.line == 2
    assert fragment in str(err) and len(str(err)) < 200
    assert last.text == "still ok"


def test_the_limits_themselves_are_accepted_and_become_requests(tmp_path):
    p = write(tmp_path, [{"conversation": "c" * MAX_ID_CHARS, "speaker": "s" * MAX_ID_CHARS, "utterance": MAX_INT, "text": "\U0001f600",
                          "start_ms": MAX_INT, "end_ms": MAX_INT},
                         {"conversation": "c" * MAX_ID_CHARS, "text": "the next number is past the limit"}])
    u, err = manifest.read(p)
    assert ref_problem(utterance_ref(u, "t")) is None
    assert encode_request(u, "t", "").SerializeToString() and gateway_request(u, "t", "").SerializeToString()
    assert isinstance(err, manifest.ManifestError) and "beyond" in str(err)


def test_a_line_longer_than_the_limit_is_an_error_skipped_unread_and_the_next_line_parses(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "MAX_LINE_CHARS", 100)
    m = tmp_path / "long.jsonl"
    m.write_text('{"text": "' + "x" * 1000 + '"}\n{"utterance": 1, "text": "after"}\n' + "y" * 450)  # the last has no newline
    items = list(manifest.read(m))
    assert [type(x).__name__ for x in items] == ["ManifestError", "Utterance", "ManifestError"]
    assert str(items[0]).startswith("line 1: the line is longer than 100") and items[1].text == "after" and items[2].line == 3
