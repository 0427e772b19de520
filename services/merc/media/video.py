"""Media files cut per utterance: a file's audio track (16 kHz mono) and frames sampled from a span.

Decoding is PyAV, whose wheels bundle FFmpeg, so any container FFmpeg reads works (MP4, MKV,
WebM, MOV, AVI; WAV, FLAC, OGG, MP3 for audio-only files). What is decoded lives only in this
process's memory: it is re-packed into the encoders' requests and dropped.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from merc.media import SAMPLE_RATE, MediaError, files

MAX_MS = 2**53  # longer than any recording, and still exact as a float


@contextmanager
def _open(path: Path):
    """The container, read through a descriptor checked to be a regular file (no FIFO, no device)."""
    import av

    try:
        f = files.open_regular(path)
    except FileNotFoundError:
        raise MediaError(f"no such file: {path}") from None
    except OSError as e:
        raise MediaError(f"cannot open {path.name}: {e.strerror}") from None
    with f:
        try:
            container = av.open(f)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise MediaError(f"cannot open {path.name} as a media file: {e}") from None
        with container:
            yield container


class _Samples:
    """A growing float32 buffer: grown in place (realloc), so holding N samples never takes 2N."""

    def __init__(self, limit: int) -> None:
        self.limit, self.n = limit, 0
        self.buf = np.zeros(min(limit, 60 * SAMPLE_RATE), np.float32)

    def extend(self, block: np.ndarray) -> None:
        if self.n + len(block) > len(self.buf):
            self.buf.resize(min(self.limit, max(self.n + len(block), len(self.buf) * 3 // 2)), refcheck=False)
        self.buf[self.n : self.n + len(block)] = block
        self.n += len(block)

    def array(self) -> np.ndarray:
        self.buf.resize(self.n, refcheck=False)
        return self.buf


@lru_cache(maxsize=1)
def audio_track(path: Path, max_seconds: float) -> np.ndarray | None:
    """The whole first audio stream at 16 kHz mono, or None if the file has none.

    Decoded once and kept (one file): a manifest's lines usually walk through one recording.
    Spans are then cut by sample index, which is exact where seeking in compressed audio is not.
    Refused as soon as the decoded samples pass ``max_seconds`` (MERC_MAX_RECORDING_SECONDS),
    whatever the header says: memory is at most 64 kB per second of that limit.
    """
    import av

    with _open(path) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        track = _Samples(int(max_seconds * SAMPLE_RATE))
        try:
            for frame in itertools.chain(container.decode(container.streams.audio[0]), [None]):
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    if track.n + len(samples) > track.limit:
                        raise MediaError(f"{path.name}: the audio track is longer than {max_seconds:g} s, the limit "
                                         "(MERC_MAX_RECORDING_SECONDS)")
                    track.extend(samples)
        except av.FFmpegError as e:
            raise MediaError(f"{path.name}: cannot decode the audio track: {e}") from None
    return track.array()


def duration_ms(path: Path, max_seconds: float) -> int:
    """Where the first video stream (else audio stream) ends, from its packets' timestamps, not the header.

    Packets are read, not decoded. A stream that runs past ``max_seconds`` is refused.
    """
    import av

    with _open(path) as container:
        streams = list(container.streams.video) or list(container.streams.audio)
        if not streams or streams[0].time_base is None:
            raise MediaError(f"{path.name}: no audio or video stream")
        stream = streams[0]
        end = None
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = (packet.pts + (packet.duration or 0)) * stream.time_base
                if end is None or t > end:
                    end = t
                    if end > max_seconds:
                        raise MediaError(f"{path.name}: the {stream.type} stream runs past {max_seconds:g} s, the limit "
                                         "(MERC_MAX_RECORDING_SECONDS)")
        except av.FFmpegError as e:
            raise MediaError(f"{path.name}: cannot read the {stream.type} stream: {e}") from None
    if end is None:
        raise MediaError(f"{path.name}: the file has no timestamps to say how long it is; give start_ms and end_ms")
    return max(0, int(end * 1000))


def audio_span(path: Path, start_ms: int | None, end_ms: int | None, max_track_seconds: float,
               max_seconds: float) -> np.ndarray | None:
    """The span's samples (the whole track without a span); None if the file has no audio.

    ``max_track_seconds``: the whole track's limit (MERC_MAX_RECORDING_SECONDS); ``max_seconds``:
    the span's (MERC_MAX_AUDIO_SECONDS), checked before anything is copied.
    """
    wave = audio_track(path, max_track_seconds)
    if wave is None:
        return None
    start = 0 if start_ms is None else start_ms * SAMPLE_RATE // 1000
    end = len(wave) if end_ms is None else min(len(wave), end_ms * SAMPLE_RATE // 1000)
    if start >= len(wave):
        raise MediaError(f"{path.name}: start_ms {start_ms} is past the end of the audio track ({len(wave) * 1000 // SAMPLE_RATE} ms)")
    if end <= start:
        raise MediaError(f"{path.name}: the span {start_ms}-{end_ms} ms holds no audio")
    if end - start > max_seconds * SAMPLE_RATE:
        raise MediaError(f"{path.name}: the span is {(end - start) / SAMPLE_RATE:.1f} s long; the limit is {max_seconds:g} s "
                         "(MERC_MAX_AUDIO_SECONDS)")
    return wave[start:end]


def frames_span(path: Path, start_ms: int | None, end_ms: int | None, count: int, max_pixels: int,
                max_seconds: float) -> list[np.ndarray]:
    """Up to ``count`` greyscale frames spread evenly over the span ([] if the file has no video).

    Without ``end_ms`` the span ends where the stream's packets do (``duration_ms``, at most
    ``max_seconds``). Every decoded frame is held to ``max_pixels``, not only the header's size:
    FFmpeg refuses a bigger one before allocating it, and so does this loop. Memory: ``count``
    frames and the decoder's own few.
    """
    import av

    with _open(path) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        if stream.codec_context is None:  # a stream FFmpeg found but has no decoder for
            raise MediaError(f"{path.name}: cannot decode the video stream (unknown or corrupt codec)")
        if stream.width * stream.height > max_pixels:
            raise MediaError(f"{path.name}: frames are {stream.width}x{stream.height}; the limit is {max_pixels} pixels (MERC_MAX_IMAGE_PIXELS)")
        # FFmpeg checks every frame it allocates against this, mid-stream size changes included.
        # (FFmpeg takes 1 to 2**31 - 1.)
        stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(min(max(max_pixels, 1), 2**31 - 1))}
        for ms in (start_ms, end_ms):
            if ms is not None and ms > MAX_MS:
                raise MediaError(f"{path.name}: {ms} ms is past the end of any recording")
        start = (start_ms or 0) / 1000
        end = (end_ms if end_ms is not None else duration_ms(path, max_seconds)) / 1000
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
                if frame.width * frame.height > max_pixels:
                    raise MediaError(f"{path.name}: a frame at {t:.2f} s is {frame.width}x{frame.height}; the limit is {max_pixels} "
                                     "pixels (MERC_MAX_IMAGE_PIXELS)")
                out.append(frame.to_ndarray(format="gray"))
                while targets and targets[0] <= t:
                    targets.pop(0)
                if not targets:
                    break
        except av.FFmpegError as e:
            raise MediaError(f"{path.name}: cannot decode the video stream: {e}") from None
    return out
