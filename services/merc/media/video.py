"""Media files cut per utterance: a file's audio track (16 kHz mono) and frames sampled from a span.

Decoding is PyAV, whose wheels bundle FFmpeg, so any container FFmpeg reads works (MP4, MKV,
WebM, MOV, AVI; WAV, FLAC, OGG, MP3 for audio-only files). What is decoded lives only in this
process's memory: it is re-packed into the encoders' requests and dropped.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from merc.media import SAMPLE_RATE, MediaError

MAX_MS = 2**53  # longer than any recording, and still exact as a float


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except FileNotFoundError:
        raise MediaError(f"no such file: {path}") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"cannot open {path.name} as a media file: {e}") from None


@lru_cache(maxsize=1)
def audio_track(path: Path, max_seconds: float = 4 * 3600) -> np.ndarray | None:
    """The whole first audio stream at 16 kHz mono, or None if the file has none.

    Decoded once and kept (one file): a manifest's lines usually walk through one recording.
    Spans are then cut by sample index, which is exact where seeking in compressed audio is not.
    """
    import av

    with _open(path) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total > max_seconds * SAMPLE_RATE:
                    raise MediaError(f"{path.name}: the audio track is longer than {max_seconds:g} s")
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.FFmpegError as e:
            raise MediaError(f"{path.name}: cannot decode the audio track: {e}") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def duration_ms(path: Path) -> int:
    with _open(path) as container:
        if container.duration is not None:
            return int(container.duration * 1000 / 1_000_000)  # container.duration is in AV_TIME_BASE (µs)
        streams = list(container.streams.video) + list(container.streams.audio)
        for s in streams:
            if s.duration is not None and s.time_base is not None:
                return int(s.duration * s.time_base * 1000)
    raise MediaError(f"{path.name}: the file does not say how long it is; give start_ms and end_ms")


def audio_span(path: Path, start_ms: int | None, end_ms: int | None) -> np.ndarray | None:
    """The span's samples (the whole track without a span); None if the file has no audio."""
    wave = audio_track(path)
    if wave is None:
        return None
    start = 0 if start_ms is None else start_ms * SAMPLE_RATE // 1000
    end = len(wave) if end_ms is None else min(len(wave), end_ms * SAMPLE_RATE // 1000)
    if start >= len(wave):
        raise MediaError(f"{path.name}: start_ms {start_ms} is past the end of the audio track ({len(wave) * 1000 // SAMPLE_RATE} ms)")
    if end <= start:
        raise MediaError(f"{path.name}: the span {start_ms}-{end_ms} ms holds no audio")
    return wave[start:end]


def frames_span(path: Path, start_ms: int | None, end_ms: int | None, count: int, max_pixels: int) -> list[np.ndarray]:
    """Up to ``count`` greyscale frames spread evenly over the span ([] if the file has no video)."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a stream FFmpeg found but has no decoder for
            raise MediaError(f"{path.name}: cannot decode the video stream (unknown or corrupt codec)")
        if stream.width * stream.height > max_pixels:
            raise MediaError(f"{path.name}: frames are {stream.width}x{stream.height}; the limit is {max_pixels} pixels (MERC_MAX_IMAGE_PIXELS)")
        for ms in (start_ms, end_ms):
            if ms is not None and ms > MAX_MS:
                raise MediaError(f"{path.name}: {ms} ms is past the end of any recording")
        start = (start_ms or 0) / 1000
        end = (end_ms if end_ms is not None else duration_ms(path)) / 1000
        targets = [start + (i + 0.5) * (end - start) / count for i in range(count)]
        out: list[np.ndarray] = []
        try:
            offset = int(start / stream.time_base) if start > 0 and stream.time_base else 0
            if 0 < offset < 2**63:  # (past that, beyond what FFmpeg seeks to: decode from the start)
                container.seek(offset, stream=stream)  # to the keyframe at or before start
            for frame in container.decode(stream):
                t = frame.time
                if t is None or t < targets[0]:
                    continue
                if t >= end:
                    break
                out.append(frame.to_ndarray(format="gray"))
                while targets and targets[0] <= t:
                    targets.pop(0)
                if not targets:
                    break
        except av.FFmpegError as e:
            raise MediaError(f"{path.name}: cannot decode the video stream: {e}") from None
    return out
