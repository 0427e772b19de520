"""Utterances in a bare recording: boundaries from voice activity, when no manifest gives them.

Speech segments from silero-vad are merged across short pauses (a breath is not a new
utterance; a quick reply in another voice is, where diarisation can tell), too-short blips are
dropped and long monologues are split, so every utterance fits the encoders' audio limit. Where
diarisation is installed (merc.analyze.diarize), each utterance is named for its speaker ("S1",
"S2", ... in order of first appearance); without it, all share one.

Where transcription is installed (merc.media.transcription), each utterance is transcribed and every
word goes to the utterance its middle falls in, so every utterance carries its words as ``text`` and no
word is cut in two: an utterance's span is widened to its words' edges, up to the next one's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.analyze import diarize, manifest
from merc.media import SAMPLE_RATE, MediaError, transcription, vad, video

AUDIO_SUFFIXES = manifest.AUDIO_SUFFIXES
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})

log = logging.getLogger(__name__)
_said: set[str] = set()  # why transcripts are off, said once a process rather than once a recording


@dataclass(frozen=True)
class Segmentation:
    max_pause_ms: int = 700
    min_speech_ms: int = 300
    max_utterance_ms: int = 15_000
    # A video with no audio track has no voice to segment by: fixed windows instead.
    silent_window_ms: int = 4_000
    # Transcribed utterance by utterance (each with up to this much of the recording either side, never
    # into a neighbour), not as one long track: on RAVDESS pairs with a second between them the whole track
    # ran sentences together and lost words at the seam (WER 0.045 against 0.023 on what is audible), for
    # 1.8 times the compute (each utterance is one 30 s Whisper window): bench/results/transcription.md.
    transcript_margin_ms: int = 300
    transcribe_whole: bool = False


def spans(wave: np.ndarray, cfg: Segmentation = Segmentation(),
          same_voice: Callable[[tuple[int, int], tuple[int, int]], bool] | None = None) -> list[tuple[int, int]]:
    """[(start_ms, end_ms)] of the utterances in a 16 kHz mono clip.

    ``same_voice(utterance, segment)`` (sample ranges), where given, can keep a short pause from joining two
    people: a quick reply is a new utterance when its voice differs from the one before (diarize.same_voice).
    """
    ms = SAMPLE_RATE // 1000
    merged: list[list[int]] = []
    for s, e in vad.speech_segments(wave):
        if (merged and s - merged[-1][1] < cfg.max_pause_ms * ms
                and (same_voice is None or same_voice((merged[-1][0], merged[-1][1]), (s, e)))):
            merged[-1][1] = e
        else:
            merged.append([s, e])
    out = []
    for s, e in merged:
        while e - s > cfg.max_utterance_ms * ms:
            out.append((s, s + cfg.max_utterance_ms * ms))
            s += cfg.max_utterance_ms * ms
        if e - s >= cfg.min_speech_ms * ms:
            out.append((s, e))
    return [(s // ms, e // ms) for s, e in out]


def assign_words(found: Sequence[tuple[int, int]], words: Sequence[transcription.Word],
                 cfg: Segmentation = Segmentation()) -> tuple[list[tuple[int, int]], list[str]]:
    """Each word to one utterance, and the utterances' spans widened to hold their words whole.

    A word belongs to the span its middle falls in, else to the nearest one within ``max_pause_ms`` (Whisper's
    word times are approximate, VAD's edges too); farther off, it is words where no voice was heard, which
    Whisper may have imagined: dropped. Widening never crosses into the next utterance's first word, so a
    15 s cut through a word moves to that word's edge.
    """
    groups: list[list[transcription.Word]] = [[] for _ in found]
    for w in words:
        mid = (w.start_ms + w.end_ms) / 2
        dist = [0 if s <= mid < e else min(abs(mid - s), abs(mid - e)) for s, e in found]
        i = min(range(len(found)), key=dist.__getitem__, default=None)
        if i is not None and dist[i] <= cfg.max_pause_ms:
            groups[i].append(w)
    out: list[tuple[int, int]] = []
    for i, ((s, e), group) in enumerate(zip(found, groups, strict=True)):
        if group:
            s, e = min(s, group[0].start_ms), max(e, group[-1].end_ms)
        if i + 1 < len(found):
            following = groups[i + 1]
            e = min(e, following[0].start_ms if following else found[i + 1][0])
        if out:
            s = max(s, out[-1][1])
        out.append((s, max(e, s + 1)))
    return out, [" ".join(w.text for w in g) for g in groups]


def words(wave: np.ndarray, found: Sequence[tuple[int, int]], cfg: Segmentation = Segmentation()) -> list[transcription.Word]:
    """The recording's words, times in ms from its start: one transcription of the whole track, or one per
    span with its margins (which stop at the neighbours' edges, so no word is heard twice)."""
    if cfg.transcribe_whole:
        return list(transcription.transcribe(wave).words)
    ms, total = SAMPLE_RATE // 1000, len(wave) * 1000 // SAMPLE_RATE
    out = []
    for i, (s, e) in enumerate(found):
        lo = max(s - cfg.transcript_margin_ms, found[i - 1][1] if i else 0)
        hi = min(e + cfg.transcript_margin_ms, found[i + 1][0] if i + 1 < len(found) else total)
        out += [transcription.Word(w.text, w.start_ms + lo, w.end_ms + lo)
                for w in transcription.transcribe(wave[lo * ms : hi * ms]).words]
    return out


def _transcribe(wave: np.ndarray, found: list[tuple[int, int]],
                cfg: Segmentation) -> tuple[list[tuple[int, int]], list[str | None]]:
    """The spans (refined) and each one's words; the spans as they were and no text when transcription is off."""
    reason = transcription.available()
    if reason is None:
        try:
            found, texts = assign_words(found, words(wave, found, cfg), cfg)
            return found, list(texts)
        except Exception as e:  # a broken model costs the transcripts, never the voice analysis
            # The type and message of the failure only: never anything the recording said.
            reason = f"transcription failed ({type(e).__name__}: {e}); utterances are analysed without text"
    if reason not in _said:
        _said.add(reason)
        log.warning("%s", reason)
    return found, [None] * len(found)


def is_media_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES


def utterances(path: Path, max_seconds: float, cfg: Segmentation = Segmentation(),
               speakers: int | None = None) -> list[manifest.Utterance]:
    """A bare audio or video file as manifest lines: one conversation, one line per utterance, each
    with its speaker (``speakers`` people when the caller knows how many; else found from the voices).

    Planned from what is decoded, never from the header's duration: the audio track (refused
    past ``max_seconds``, MERC_MAX_RECORDING_SECONDS) or, without one, the video's packet times.
    """
    wave = video.audio_track(path, max_seconds)
    if wave is not None:
        found = spans(wave, cfg, diarize.same_voice(wave))
        if not found:
            raise MediaError(f"{path.name}: no speech found in the audio track")
        found, texts = _transcribe(wave, found, cfg)
        who = diarize.speakers(wave, found, diarize.Diarisation(speakers=speakers))
    elif path.suffix.lower() in AUDIO_SUFFIXES:
        raise MediaError(f"{path.name}: no audio stream")
    else:
        total = video.duration_ms(path, max_seconds)
        found = [(s, min(s + cfg.silent_window_ms, total)) for s in range(0, total, cfg.silent_window_ms)]
        texts = [None] * len(found)
        who = None
    who = who or [""] * len(found)
    return [
        manifest.Utterance(line=i + 1, conversation=path.stem, utterance=i, video=path, start_ms=s, end_ms=e,
                           text=text or None, speaker=speaker)
        for i, ((s, e), text, speaker) in enumerate(zip(found, texts, who, strict=True))
    ]


def read(path: str | Path, max_seconds: float, base: Path | None = None,
         speakers: int | None = None) -> Iterator[manifest.Utterance | manifest.ManifestError]:
    """What `merc analyze` reads: a manifest's lines (media relative to ``base``: ``manifest.read``), or a bare
    media file's utterances (``max_seconds``, ``speakers``: ``utterances``)."""
    path = Path(path)
    if not is_media_file(path):
        yield from manifest.read(path, base)
        return
    try:
        found = utterances(path, max_seconds, speakers=speakers)
    except MediaError as e:
        yield manifest.ManifestError(0, str(e))
        return
    yield from found
