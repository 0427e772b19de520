"""Fuzz the media-file readers (video.py, PyAV) and segment.read on random and mutated files.

Each call gives a valid result or a MediaError with a message; segment.read turns a bad file
into one ManifestError, never an exception.
"""

from __future__ import annotations

import io
import itertools
import os
import struct

import numpy as np
import pytest
import soundfile as sf
from bombs import NON_REGULAR, flac_silence, mkv_lying_duration
from hypothesis import example, given
from hypothesis import strategies as st
from samples import media_file, speech

from fuzz.common import count, fuzz, media_bytes, mutate, mutated, peak_traced_mb
from merc.analyze import manifest, segment
from merc.media import SAMPLE_RATE, MediaError, video

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::RuntimeWarning")]

MAX_PIXELS = 4096 * 4096
HOURS = 2 * 3600  # MERC_MAX_RECORDING_SECONDS's default
SUFFIXES = [".mp4", ".mkv", ".wav", ".flac", ".m4a", ".webm", ".avi", ".ogg"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    out = [
        media_file(d / "talk.mp4", talk=((0.2, 1.0),), seconds=1.2, fps=5, size=48).read_bytes(),
        media_file(d / "silent.mp4", talk=(), seconds=1.0, fps=5, size=48, audio=False).read_bytes(),
        media_file(d / "talk.mkv", talk=((0.2, 0.8),), seconds=1.0, fps=5, size=32).read_bytes(),
        media_file(d / "voice.m4a", talk=((0.1, 0.9),), seconds=1.0, video=False).read_bytes(),
    ]
    buf = io.BytesIO()
    sf.write(buf, speech(1.0), SAMPLE_RATE, format="FLAC")
    out.append(buf.getvalue())
    return tuple(out)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzzed")


_names = itertools.count()
SPAN = st.one_of(st.none(), st.integers(0, 1200), st.integers(0, 1200), st.integers(0, 2**70))


def _write(workdir, data: bytes, suffix: str):
    path = workdir / f"f{next(_names)}{suffix}"
    path.write_bytes(data)
    video.audio_track.cache_clear()
    return path


def _rejected(target: str, e: MediaError) -> None:
    assert str(e).strip()
    count(target, "rejected")


def test_video_readers(seeds, workdir):
    talk, silent = seeds[0], seeds[1]

    @fuzz(250)
    @given(data=media_bytes(*seeds), suffix=st.sampled_from(SUFFIXES), start=SPAN, end=SPAN, frames=st.integers(1, 8),
           max_pixels=st.sampled_from([MAX_PIXELS, 48 * 48, 100]))
    # Regressions in frames_span: a video stream without a decoder (AttributeError: no 'width'); a
    # start_ms past what a seek offset (int64) or a float holds (OverflowError).
    @example(data=mutate(silent, ("insert", 1526, b"\x00")), suffix=".mp4", start=None, end=None, frames=1, max_pixels=MAX_PIXELS)
    @example(data=talk, suffix=".mp4", start=900_719_925_474_099_188, end=None, frames=1, max_pixels=MAX_PIXELS)
    @example(data=talk, suffix=".mp4", start=2**53, end=10**400, frames=2, max_pixels=MAX_PIXELS)
    @example(data=talk, suffix=".mp4", start=0, end=10**400, frames=2, max_pixels=MAX_PIXELS)
    def run(data, suffix, start, end, frames, max_pixels):
        if start is not None and end is not None and end < start:
            start, end = end, start  # the manifest rejects end_ms < start_ms
        path = _write(workdir, data, suffix)
        try:
            assert isinstance(video.duration_ms(path, HOURS), int)
            count("video.duration_ms", "ok")
        except MediaError as e:
            _rejected("video.duration_ms", e)
        try:
            wave = video.audio_span(path, start, end, HOURS, 60)
            if wave is not None:
                assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size >= 1
            count("video.audio_span", "no audio" if wave is None else "ok")
        except MediaError as e:
            _rejected("video.audio_span", e)
        try:
            images = video.frames_span(path, start, end, frames, max_pixels, HOURS)
            assert isinstance(images, list) and len(images) <= frames
            for img in images:
                assert img.dtype == np.uint8 and img.ndim == 2 and 1 <= img.size <= max_pixels
            count("video.frames_span", "ok" if images else "no frames")
        except MediaError as e:
            _rejected("video.frames_span", e)

    run()


def test_segment_read_bare_media(seeds, workdir):
    @fuzz(120)
    @given(data=media_bytes(*seeds), suffix=st.sampled_from(SUFFIXES))
    def run(data, suffix):
        path = _write(workdir, data, suffix)
        items = list(segment.read(path, HOURS))
        if len(items) == 1 and isinstance(items[0], manifest.ManifestError):
            assert items[0].line == 0 and str(items[0]).strip()
            count("segment.read[media]", "rejected")
            return
        for i, u in enumerate(items):
            assert isinstance(u, manifest.Utterance)
            assert u.line == i + 1 and u.utterance == i and u.video == path
            assert 0 <= u.start_ms <= u.end_ms
        count("segment.read[media]", "utterances" if items else "none")

    run()


# Hostile recordings by class (tests/bombs.py): compressed bombs, durations that lie, and paths that are
# not regular files (a FIFO, devices, a directory, behind a media suffix). A small recording limit
# keeps the cases fast; what a case may hold follows from it, whatever the file claims.
LIMIT_S = 30
TRACED_LIMIT_MB = LIMIT_S * SAMPLE_RATE * 4 / 2**20 + 8  # the 16 kHz track and the decoder's frames


def test_hostile_recordings(workdir, tmp_path_factory):
    lying = mkv_lying_duration(tmp_path_factory.mktemp("lying") / "seed.mkv", seconds=1.0).read_bytes()
    specials = tmp_path_factory.mktemp("specials")
    os.mkfifo(specials / "pipe.wav")
    for i, target in enumerate(p for p in NON_REGULAR if os.path.exists(p)):
        os.symlink(target, specials / f"dev{i}.mp4")
    special = sorted(specials.iterdir())

    bombs = st.builds(flac_silence, seconds=st.one_of(st.floats(0.5, 20.0), st.floats(31.0, 10 * 3600.0)),
                      rate=st.sampled_from([8000, 48_000]), channels=st.integers(1, 2),
                      claimed_samples=st.one_of(st.none(), st.just(0), st.integers(1, 2**36 - 1)))
    claims = st.floats(0, 1e300, allow_nan=False).map(lambda ms: _claim(lying, ms))
    files = st.one_of(bombs.map(lambda b: (b, ".flac")), bombs.flatmap(lambda b: mutated(b, 3)).map(lambda b: (b, ".flac")),
                      claims.map(lambda b: (b, ".mkv")), st.just(lying).flatmap(lambda b: mutated(b, 3)).map(lambda b: (b, ".mkv")),
                      st.sampled_from(special).map(lambda p: (p, "")))

    @fuzz(60)
    @given(item=files)
    @example(item=(flac_silence(10 * 3600), ".flac"))
    @example(item=(special[0], ""))
    def run(item):
        data, suffix = item
        path = data if isinstance(data, os.PathLike) else _write(workdir, data, suffix)
        video.audio_track.cache_clear()
        items, peak = peak_traced_mb(lambda: list(segment.read(path, LIMIT_S)))
        assert not isinstance(items, Exception), items
        assert peak < TRACED_LIMIT_MB, f"{peak:.1f} MB traced"
        if len(items) == 1 and isinstance(items[0], manifest.ManifestError):
            assert str(items[0]).strip()
            count("segment.read[hostile]", "rejected")
            return
        for u in items:
            assert isinstance(u, manifest.Utterance) and 0 <= u.start_ms <= u.end_ms <= LIMIT_S * 1000
        count("segment.read[hostile]", "utterances" if items else "none")

    run()


def _claim(data: bytes, ms: float) -> bytes:
    """``data`` (a Matroska file) with its Duration element set to ``ms``."""
    out = bytearray(data)
    at = out.index(b"\x44\x89")
    size = out[at + 2] & 0x7F
    out[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", ms if size == 8 else min(ms, 3e38))
    return bytes(out)
