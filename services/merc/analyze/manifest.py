"""The conversation manifest: JSON lines, one utterance per line, paths relative to the file.

    {"conversation": "d42", "utterance": 3, "speaker": "Joey", "text": "Great job.",
     "audio": "clips/d42_u3.flac", "frames": ["faces/d42_u3_0.jpg"], "faces": [...],
     "video": "media/d42.mp4", "start_ms": 1200, "end_ms": 3400, "label": "joy"}

Every media field is optional; an absent one is a missing modality. ``video`` with
``start_ms``/``end_ms`` means: cut that span's audio track and frames from the file (the whole
file without them); an audio-only file (WAV, FLAC, MP3, ...) there gives the audio alone. This is
a stable public format: keep it backward compatible.

Each line is validated here, whole, against what later code takes (protobuf fields, the store's
columns): a line that parses becomes requests without error, and one that cannot is a
ManifestError naming the line, never an exception in the middle of a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from merc.pipeline.labels import LABELS
from merc.pipeline.results import MAX_ID_CHARS, MAX_INT

# Far more than a line with the longest text, ids and paths takes; a longer line is refused unread,
# so a file of one endless line costs no more than this.
MAX_LINE_CHARS = 1 << 20

# Files in the `video` field that can only give audio.
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac"})


class ManifestError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


@dataclass
class Utterance:
    line: int
    conversation: str
    utterance: int
    speaker: str = ""
    text: str | None = None
    audio: Path | None = None
    frames: list[Path] = field(default_factory=list)
    faces: list[Path] = field(default_factory=list)
    video: Path | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    label: str | None = None

    @property
    def given(self) -> list[str]:
        """Modalities the line offers, by name."""
        out = []
        if self.text is not None and self.text.strip():
            out.append("text")
        if self.audio is not None or self.video is not None:
            out.append("audio")
        if self.frames or self.faces or (self.video is not None and self.video.suffix.lower() not in AUDIO_SUFFIXES):
            out.append("vision")
        return out


_STRING = ("conversation", "speaker", "text", "audio", "video", "label")
_INT = ("utterance", "start_ms", "end_ms")
_LIST = ("frames", "faces")
_PATHS = ("audio", "video", "frames", "faces")


def _brief(value) -> str:
    """A value for an error message: a line may hold megabytes or a 4000-digit number."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _utf8(value: str) -> bool:
    """Whether protobuf (and the gateway) can carry it: JSON escapes can spell lone surrogates such as \\ud800."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _strings(obj: dict, key: str) -> list[str]:
    """The strings a field holds (after the type checks): none, one, or a list of paths."""
    value = obj.get(key)
    return [] if value is None else value if isinstance(value, list) else [value]


def _check(obj: dict, line: int) -> None:
    for key in _STRING:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ManifestError(line, f"{key!r} must be a string, got {type(obj[key]).__name__}")
    for key in _INT:
        v = obj.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ManifestError(line, f"{key!r} must be a non-negative integer, got {_brief(v)}")
        if v is not None and v > MAX_INT:
            raise ManifestError(line, f"{key!r} must be at most {MAX_INT}, got {_brief(v)}")
    for key in _LIST:
        v = obj.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(p, str) for p in v)):
            raise ManifestError(line, f"{key!r} must be a list of paths (strings)")
    for key in (*_STRING, *_LIST):
        for value in _strings(obj, key):
            if not _utf8(value):
                raise ManifestError(line, f"{key!r} is not valid Unicode text (it has a lone surrogate such as \\ud800)")
            if key in _PATHS and "\x00" in value:
                raise ManifestError(line, f"{key!r} holds a path with a NUL character")
    if obj.get("label") is not None and obj["label"].strip().lower() not in LABELS:
        raise ManifestError(line, f"label {_brief(obj['label'])} is not one of {', '.join(LABELS)}")
    if obj.get("start_ms") is not None and obj.get("end_ms") is not None and obj["end_ms"] < obj["start_ms"]:
        raise ManifestError(line, "end_ms is before start_ms")


def _check_id(key: str, value: str, line: int) -> None:
    """Conversation ids and speakers as the store keeps them (merc.pipeline.results.ref_problem)."""
    if len(value) > MAX_ID_CHARS:
        raise ManifestError(line, f"{key!r} is longer than {MAX_ID_CHARS} characters")
    if "\x00" in value:
        raise ManifestError(line, f"{key!r} contains a NUL character")
    if not _utf8(value):  # a line's own strings are checked already: this is a file name that is not UTF-8
        raise ManifestError(line, f"{key!r} (the file's name, as the line names none) is not valid Unicode text")


def parse_line(raw: str, line: int, base: Path, counters: dict[str, int], default_conversation: str) -> Utterance | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ManifestError(line, f"invalid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # an integer longer than Python reads: "Exceeds the limit (4300 digits) ..."
        raise ManifestError(line, f"invalid JSON ({str(e).split(':')[0]})") from None
    except RecursionError:
        raise ManifestError(line, "invalid JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise ManifestError(line, f"expected a JSON object, got {type(obj).__name__}")
    _check(obj, line)
    conversation = obj.get("conversation") or default_conversation
    _check_id("conversation", conversation, line)
    _check_id("speaker", obj.get("speaker") or "", line)
    utterance = obj.get("utterance")
    if utterance is None:
        utterance = counters.get(conversation, 0)
        if utterance > MAX_INT:
            raise ManifestError(line, f"no 'utterance' given and the one after the last is beyond {MAX_INT}")
    counters[conversation] = utterance + 1

    def path(p: str | None) -> Path | None:
        return None if p is None else (base / p)

    return Utterance(
        line=line,
        conversation=conversation,
        utterance=utterance,
        speaker=obj.get("speaker") or "",
        text=obj.get("text"),
        audio=path(obj.get("audio")),
        frames=[base / p for p in obj.get("frames") or []],
        faces=[base / p for p in obj.get("faces") or []],
        video=path(obj.get("video")),
        start_ms=obj.get("start_ms"),
        end_ms=obj.get("end_ms"),
        label=obj["label"].strip().lower() if obj.get("label") else None,
    )


def read(path: str | Path, base: Path | None = None) -> Iterator[Utterance | ManifestError]:
    """Each line as an Utterance, or the ManifestError that explains why it cannot be one.

    Media paths are relative to ``base``, by default the manifest's folder (a manifest read from
    stdin is spooled to a file elsewhere: its paths are relative to the working directory)."""
    path = Path(path)
    counters: dict[str, int] = {}
    for i, raw in lines(path):
        try:
            if raw is None:
                raise ManifestError(i, f"the line is longer than {MAX_LINE_CHARS} characters")
            u = parse_line(raw, i, path.parent if base is None else base, counters, path.stem)
        except ManifestError as e:
            yield e
            continue
        if u is not None:
            yield u


def lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each line, or (number, None) for one over MAX_LINE_CHARS, which is skipped unread."""
    with path.open(encoding="utf-8", errors="replace") as f:
        number = 0
        while raw := f.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(raw) <= MAX_LINE_CHARS or raw.endswith("\n"):
                yield number, raw
                continue
            while (rest := f.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                pass
            yield number, None
