"""Utterances in a bare recording: boundaries from voice activity, when no manifest gives them.

Speech segments from silero-vad are merged across short pauses (a breath is not a new
utterance), too-short blips are dropped and long monologues are split, so every utterance fits
the encoders' audio limit. There is no diarisation: every utterance gets the same speaker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.analyze import manifest
from merc.media import SAMPLE_RATE, MediaError, vad, video

AUDIO_SUFFIXES = manifest.AUDIO_SUFFIXES
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})


@dataclass(frozen=True)
class Segmentation:
    max_pause_ms: int = 700
    min_speech_ms: int = 300
    max_utterance_ms: int = 15_000
    # A video with no audio track has no voice to segment by: fixed windows instead.
    silent_window_ms: int = 4_000


def spans(wave: np.ndarray, cfg: Segmentation = Segmentation()) -> list[tuple[int, int]]:
    """[(start_ms, end_ms)] of the utterances in a 16 kHz mono clip."""
    ms = SAMPLE_RATE // 1000
    merged: list[list[int]] = []
    for s, e in vad.speech_segments(wave):
        if merged and s - merged[-1][1] < cfg.max_pause_ms * ms:
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


def is_media_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES


def utterances(path: Path, max_seconds: float, cfg: Segmentation = Segmentation()) -> list[manifest.Utterance]:
    """A bare audio or video file as manifest lines: one conversation, one line per utterance.

    Planned from what is decoded, never from the header's duration: the audio track (refused
    past ``max_seconds``, MERC_MAX_RECORDING_SECONDS) or, without one, the video's packet times.
    """
    wave = video.audio_track(path, max_seconds)
    if wave is not None:
        found = spans(wave, cfg)
        if not found:
            raise MediaError(f"{path.name}: no speech found in the audio track")
    elif path.suffix.lower() in AUDIO_SUFFIXES:
        raise MediaError(f"{path.name}: no audio stream")
    else:
        total = video.duration_ms(path, max_seconds)
        found = [(s, min(s + cfg.silent_window_ms, total)) for s in range(0, total, cfg.silent_window_ms)]
    return [
        manifest.Utterance(line=i + 1, conversation=path.stem, utterance=i, video=path, start_ms=s, end_ms=e)
        for i, (s, e) in enumerate(found)
    ]


def read(path: str | Path, max_seconds: float, base: Path | None = None) -> Iterator[manifest.Utterance | manifest.ManifestError]:
    """What `merc analyze` reads: a manifest's lines (media relative to ``base``: ``manifest.read``), or a bare
    media file's utterances (``max_seconds``: ``utterances``)."""
    path = Path(path)
    if not is_media_file(path):
        yield from manifest.read(path, base)
        return
    try:
        found = utterances(path, max_seconds)
    except MediaError as e:
        yield manifest.ManifestError(0, str(e))
        return
    yield from found
