"""Fuzz the media decoders: a valid result (dtype, shape, range) or a MediaError with a message.

Most cases are valid files (WAV, FLAC, OGG, PNG, JPEG, MP4) with a few bytes flipped, overwritten,
inserted, deleted or cut: they get past the magic numbers into the decoders, where random
bytes do not.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from bombs import flac_silence, wav_lying
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.common import count, fuzz, media_bytes, mutate, mutated, peak_traced_mb
from fuzz.seeds import (
    AUDIO_SEEDS,
    CHANNELS,
    ENCODINGS,
    IMAGE_SEEDS,
    PCM_SEEDS,
    RATES,
    SQUARE,
)
from merc import media

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::RuntimeWarning")]
MAX_SECONDS = 60.0


def check_wave(wave, frames_in: int | None, rate: int | None) -> None:
    assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 1
    assert wave.size >= 1 and np.isfinite(wave).all()
    assert np.abs(wave).max() <= 1.0, f"samples out of [-1, 1]: {np.abs(wave).max()}"
    assert wave.size <= MAX_SECONDS * media.SAMPLE_RATE + 1
    if frames_in is not None:
        # 16 kHz: the length follows from the input's frames and rate (to 0.1 %, one sample).
        expected = frames_in * media.SAMPLE_RATE / rate
        assert abs(wave.size - expected) <= 1 + expected * 1e-3, (wave.size, expected)


def decode_audio_case(data, encoding, sample_rate, channels, target):
    try:
        wave = media.decode_audio(data, encoding, sample_rate, channels, MAX_SECONDS)
    except media.MediaError as e:
        assert str(e).strip()
        count(target, "rejected")
        return
    if encoding:
        width = np.dtype(media.PCM[encoding][0]).itemsize * channels
        check_wave(wave, len(data) // width, sample_rate)
    else:
        check_wave(wave, None, None)
    count(target, "decoded")


@fuzz(500)
@given(data=media_bytes(*AUDIO_SEEDS), encoding=st.just(""), sample_rate=RATES, channels=CHANNELS)
def test_decode_audio_containers(data, encoding, sample_rate, channels):
    decode_audio_case(data, encoding, sample_rate, channels, "media.decode_audio[file]")


@fuzz(400)
@given(data=st.one_of(st.binary(max_size=4096), st.sampled_from(PCM_SEEDS).flatmap(mutated)),
       encoding=ENCODINGS, sample_rate=RATES, channels=CHANNELS)
# Regressions: a full-scale square wave came out of the resampling filter beyond [-1, 1]; a
# prime rate near 2**32 designed a filter of 86 G taps (MemoryError), one of 1 MHz took seconds.
@example(data=SQUARE, encoding="pcm_s16le", sample_rate=8000, channels=1)
@example(data=SQUARE, encoding="pcm_s16le", sample_rate=4_294_967_291, channels=1)
@example(data=SQUARE, encoding="pcm_s16le", sample_rate=1_000_003, channels=2)
@example(data=SQUARE, encoding="pcm_s16le", sample_rate=383_987, channels=1)
def test_decode_audio_raw_pcm(data, encoding, sample_rate, channels):
    decode_audio_case(data, encoding, sample_rate, channels, "media.decode_audio[raw]")


@fuzz(500)
@given(data=media_bytes(*IMAGE_SEEDS),
       max_pixels=st.one_of(st.just(4096 * 4096), st.sampled_from([1, 100, 32 * 24, 64 * 64]), st.integers(0, 2**31)))
# Regression: a PNG whose IHDR length says 12 made Pillow raise ValueError("Truncated IHDR chunk").
@example(data=mutate(IMAGE_SEEDS[0], ("flip", 11, 0)), max_pixels=4096 * 4096)
def test_decode_image(data, max_pixels):
    try:
        img = media.decode_image(data, max_pixels)
    except media.MediaError as e:
        assert str(e).strip()
        count("media.decode_image", "rejected")
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 2
    assert img.size >= 1 and img.size <= max_pixels
    count("media.decode_image", "decoded")


# Hostile inputs by class (tests/bombs.py): compressed bombs (hours of FLAC silence in kilobytes),
# headers that lie about the length (STREAMINFO, RIFF/data sizes), each also mutated. Whatever
# they claim or decode to, the decoder holds at most the limit's output and one block.
BOMBS = st.builds(flac_silence, seconds=st.one_of(st.floats(0.01, 59.0), st.floats(61.0, 10 * 3600.0)),
                  rate=st.sampled_from([8000, 16_000, 44_100, 96_000]), channels=st.integers(1, 2),
                  claimed_samples=st.one_of(st.none(), st.just(0), st.integers(1, 2**36 - 1)))
LYING_WAV = st.builds(wav_lying, seconds=st.floats(0.01, 2.0), rate=st.sampled_from([8000, 16_000, 48_000]),
                      claimed_bytes=st.integers(0, 2**32 - 37))
# 60 s at 16 kHz (3.8 MB, twice while the blocks are joined) plus blocks and the resampler's buffers.
TRACED_LIMIT_MB = 16


@pytest.fixture(scope="module", autouse=True)
def _imported():
    importlib.import_module("scipy.signal")  # once before any case: an import is not a case's memory


@fuzz(60)
@given(data=st.one_of(BOMBS, LYING_WAV, BOMBS.flatmap(lambda b: mutated(b, 3)), LYING_WAV.flatmap(lambda b: mutated(b, 3))))
@example(data=flac_silence(10 * 3600))
@example(data=flac_silence(10, claimed_samples=2**36 - 1))
@example(data=wav_lying(1.0, claimed_bytes=2**32 - 37))
def test_decode_audio_hostile(data):
    out, peak = peak_traced_mb(lambda: media.decode_audio(data, max_seconds=MAX_SECONDS))
    assert peak < TRACED_LIMIT_MB, f"{peak:.1f} MB traced for {len(data)} bytes"
    if isinstance(out, media.MediaError):
        assert str(out).strip()
        count("media.decode_audio[hostile]", "rejected")
        return
    assert not isinstance(out, Exception), out
    check_wave(out, None, None)
    count("media.decode_audio[hostile]", "decoded")
