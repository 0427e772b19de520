"""Fuzz the manifest parser: every line is an Utterance or a ManifestError that names the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.common import count, fuzz
from merc.analyze import manifest, segment
from merc.pipeline.labels import LABELS

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


def _dump(obj) -> str:
    # json.dumps writes NaN/Infinity (which json.loads reads back) and escapes lone surrogates.
    return json.dumps(obj, ensure_ascii=False) if not isinstance(obj, str) else obj


lines = st.one_of(
    objects.map(_dump),
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
        assert ms is None or (isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0)
    count("manifest.parse_line", "ok")


@fuzz(1500)
@given(raw=lines, line=st.integers(1, 10**9))
# Regressions: json.loads raised ValueError (an integer over 4300 digits) and RecursionError.
@example(raw='{"utterance": ' + "9" * 4301 + "}", line=3)
@example(raw='{"frames": ' + "[" * 3000 + "]" * 3000 + "}", line=7)
@example(raw='{"start_ms": 1e400, "end_ms": -1e400}', line=1)  # inf / -inf
@example(raw='{"label": "\\ud800"}', line=2)  # a lone surrogate
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
        items = list(segment.read(path))
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
