"""Fuzz the manifest parser: every line is an Utterance or a ManifestError that names the line;
an accepted line becomes requests without error, and a whole run answers every line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.common import count, fuzz
from merc.analyze import manifest, segment
from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.requests import encode_request, gateway_request, utterance_ref
from merc.pipeline.labels import LABELS
from merc.pipeline.results import MAX_ID_CHARS, MAX_INT, ref_problem
from merc.runtime.config import Settings

KEYS = ("conversation", "utterance", "speaker", "text", "audio", "frames", "faces", "video", "start_ms", "end_ms", "label")
BASE = Path("/manifests")

_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([*LABELS, *(lb.upper() + " " for lb in LABELS), "", " ", "\u0000", "\ud800"]),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
# Objects with the manifest's keys, each of any JSON type (right or wrong), plus unknown keys.
objects = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), json_values, max_size=len(KEYS) + 2)


# Values at and past what later code takes: protobuf's uint32/uint64, the store's INTEGER and
# VARCHAR columns, UTF-8 (lone surrogates pass JSON), NUL.
extreme_ints = st.one_of(
    st.sampled_from([0, 1, MAX_INT - 1, MAX_INT, MAX_INT + 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -(2**63)]),
    st.integers(MAX_INT - 3, MAX_INT + 3),
)
_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_odd_chars = st.one_of(st.characters(), _surrogates, st.sampled_from(["\x00", "\U0010ffff", "\ufeff", "\u2028", "\n", "\\", '"']))
extreme_strings = st.one_of(
    st.integers(MAX_ID_CHARS - 2, MAX_ID_CHARS + 2).map(lambda n: "c" * n),
    st.integers(MAX_ID_CHARS - 2, MAX_ID_CHARS + 2).map(lambda n: "\U0001f600" * n),  # characters, not bytes, are counted
    st.lists(_odd_chars, max_size=MAX_ID_CHARS + 4).map("".join),
    st.tuples(st.text(max_size=8), _surrogates, st.text(max_size=8)).map("".join),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "\ud83d\ude00", "x" * 5000]),
)
_extreme = {
    **{k: extreme_ints for k in ("utterance", "start_ms", "end_ms")},
    **{k: extreme_strings for k in ("conversation", "speaker", "text", "audio", "video")},
    **{k: st.lists(extreme_strings, max_size=3) for k in ("frames", "faces")},
    "label": st.one_of(st.sampled_from(LABELS), extreme_strings),
}
extreme_objects = st.fixed_dictionaries({}, optional=_extreme)


def _dump(obj) -> str:
    # json.dumps writes NaN/Infinity (which json.loads reads back) and escapes lone surrogates.
    return json.dumps(obj, ensure_ascii=False) if not isinstance(obj, str) else obj


lines = st.one_of(
    objects.map(_dump),
    extreme_objects.map(_dump),  # lone surrogates raw in the line
    extreme_objects.map(json.dumps),  # ... and escaped, as \ud800: what survives a file read
    json_values.map(_dump),
    st.text(max_size=200),
    # Near-valid lines: a valid object with one character changed, cut or repeated.
    st.tuples(objects.map(_dump), st.integers(0, 300), st.characters()).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
    st.tuples(objects.map(_dump), st.integers(0, 300)).map(lambda t: t[0][: t[1]]),
    # Huge numbers and deep nesting: limits of the JSON reader itself.
    st.integers(1, 6000).map(lambda n: '{"utterance": ' + "9" * n + "}"),
    st.integers(1, 6000).map(lambda n: '{"start_ms": 1' + "0" * n + ".5}"),
    st.integers(1, 5000).map(lambda n: '{"frames": ' + "[" * n + "]" * n + "}"),
    st.integers(1, 5000).map(lambda n: "{\"text\": " + '{"a":' * n + "1" + "}" * n + "}"),
)


def check_line(raw: str, line: int) -> None:
    counters: dict[str, int] = {}
    try:
        u = manifest.parse_line(raw, line, BASE, counters, "default")
    except manifest.ManifestError as e:
        assert e.line == line
        assert str(e).startswith(f"line {line}: ") and len(str(e)) > len(f"line {line}: ")
        count("manifest.parse_line", "rejected")
        return
    if u is None:
        assert not raw.strip()
        count("manifest.parse_line", "blank")
        return
    assert isinstance(u, manifest.Utterance) and u.line == line
    assert isinstance(u.conversation, str) and u.conversation
    assert isinstance(u.utterance, int) and u.utterance >= 0 and counters[u.conversation] == u.utterance + 1
    assert isinstance(u.speaker, str)
    assert u.label is None or u.label in LABELS
    assert all(isinstance(p, Path) for p in [*u.frames, *u.faces])
    for ms in (u.start_ms, u.end_ms):
        assert ms is None or (isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= MAX_INT)
    # What later code takes: the store's limits, protobuf's strings and integers, paths the OS can name.
    assert ref_problem(utterance_ref(u, "tenant")) is None
    encode_request(u, "tenant", "").SerializeToString()
    gateway_request(u, "tenant", "").SerializeToString()
    for p in [u.audio, u.video, *u.frames, *u.faces]:
        assert p is None or "\x00" not in str(p) and str(p).encode("utf-8")
    count("manifest.parse_line", "ok")


@fuzz(1500)
@given(raw=lines, line=st.integers(1, 10**9))
# Regressions: json.loads raised ValueError (an integer over 4300 digits) and RecursionError.
@example(raw='{"utterance": ' + "9" * 4301 + "}", line=3)
@example(raw='{"frames": ' + "[" * 3000 + "]" * 3000 + "}", line=7)
@example(raw='{"start_ms": 1e400, "end_ms": -1e400}', line=1)  # inf / -inf
@example(raw='{"label": "\\ud800"}', line=2)  # a lone surrogate
# Regressions: JSON read these, later code could not (protobuf raised mid-run, ending it).
@example(raw='{"text": "bad \\ud800"}', line=4)
@example(raw='{"utterance": 4294967296, "text": "x"}', line=5)
def test_parse_line_gives_an_utterance_or_a_line_error(raw, line):
    check_line(raw, line)


# Whole files: bytes that may not be UTF-8, any line endings; read() must yield one item per
# non-blank line, each an Utterance or a ManifestError with a line number, and never raise.
file_lines = st.lists(st.one_of(lines.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=80)), max_size=12)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("manifests")


def test_read_yields_a_result_for_every_line(workdir):
    @fuzz(300)
    @given(chunks=file_lines, sep=st.sampled_from([b"\n", b"\r\n", b"\r"]), name=st.sampled_from(["m.jsonl", "m.txt", "m"]))
    def run(chunks, sep, name):
        path = workdir / name
        path.write_bytes(sep.join(chunks))
        items = list(segment.read(path, 7200))
        # Not a media suffix: segment.read is manifest.read.
        assert [str(i) if isinstance(i, Exception) else i for i in items] == \
            [str(i) if isinstance(i, Exception) else i for i in manifest.read(path)]
        with path.open(encoding="utf-8", errors="replace") as f:
            raw_lines = list(f)
        n_lines = len(raw_lines)
        # Exactly one item per non-blank line, in order.
        assert [i.line for i in items] == [n for n, raw in enumerate(raw_lines, start=1) if raw.strip()]
        for item in items:
            if isinstance(item, manifest.ManifestError):
                assert 1 <= item.line <= n_lines and str(item).startswith(f"line {item.line}: ")
            else:
                assert isinstance(item, manifest.Utterance) and 1 <= item.line <= n_lines
                assert item.conversation  # the file's stem when the line names none
        errors = sum(isinstance(i, manifest.ManifestError) for i in items)
        count("manifest.read", "empty" if not items else "no line error" if not errors else "with line errors")

    run()


# Whole runs: every non-blank line answered in order, by an event or by errors that name it; never an exception.
# Lines the parser takes, at the limits, so that runs reach the encoders and fusion too.
_ids = st.one_of(st.text(max_size=4), st.just("c" * MAX_ID_CHARS), st.just("\U0001f600" * MAX_ID_CHARS))
valid_objects = st.fixed_dictionaries(
    {"text": st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)},
    optional={"conversation": _ids, "speaker": _ids, "utterance": st.sampled_from([0, 1, MAX_INT - 1, MAX_INT]),
              "start_ms": st.sampled_from([0, MAX_INT]), "label": st.sampled_from(LABELS)},
)
run_lines = st.lists(st.one_of(valid_objects.map(json.dumps), valid_objects.map(json.dumps), extreme_objects.map(json.dumps),
                               lines.filter(lambda x: "\n" not in x and "\r" not in x)), max_size=6)


def test_embedded_run_answers_every_line(inference, workdir):
    @fuzz(40)
    @given(chunks=run_lines)
    @example(chunks=['{"text": "fine"}', '{"text": "bad \\ud800"}', '{"utterance": 4294967296, "text": "big"}', '{"text": "fine too"}'])
    def run(chunks):
        path = workdir / "run.jsonl"
        path.write_text("\n".join(chunks) + "\n", encoding="utf-8", errors="surrogatepass")
        with path.open(encoding="utf-8", errors="replace") as f:
            expected = [n for n, raw in enumerate(f, start=1) if raw.strip()]
        pipeline = EmbeddedPipeline(Settings(inference="local"), db_path=str(workdir / "run.db"), inference=inference)
        try:
            results = list(pipeline.analyze(path))
        finally:
            pipeline.close()
            (workdir / "run.db").unlink()
        assert [r.line if r.utterance is None else r.utterance.line for r in results] == expected
        for r in results:
            n = r.line if r.utterance is None else r.utterance.line
            assert r.event is not None or r.errors
            assert all(e.startswith(f"line {n}: ") for e in r.errors)
            assert not any("unexpected error" in e for e in r.errors), r.errors  # every failure a check foresaw
            r.to_json()
            count("analyze.run", "event" if r.event is not None else "error")

    run()
