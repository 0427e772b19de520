"""Valid inputs the mutation strategies start from, and value strategies shared by the fuzz tests."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from hypothesis import strategies as st
from PIL import Image
from samples import face_png, voice_wav


def sound(fmt: str, rate: int, channels: int, subtype: str | None = None, seconds: float = 0.25) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * (150 + 50 * c) * t) for c in range(channels)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def image(fmt: str, size=(32, 24), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(face_png())).convert(mode).resize(size).save(buf, format=fmt)
    return buf.getvalue()


AUDIO_SEEDS = (
    voice_wav(seconds=0.25, rate=22_050),
    sound("WAV", 8_000, 2, "PCM_16"),
    sound("WAV", 48_000, 1, "FLOAT"),
    sound("FLAC", 44_100, 2),
    sound("OGG", 16_000, 1),
)
IMAGE_SEEDS = (face_png(), image("JPEG"), image("PNG", mode="L"), image("JPEG", mode="L"), image("PNG", mode="RGBA"))
PCM_SEEDS = (
    (np.sin(np.arange(800) / 5) * 20000).astype("<i2").tobytes(),
    (np.sin(np.arange(800) / 5) * 0.9).astype("<f4").tobytes(),
    np.array([1.0, -1.0, 3.0, np.nan, np.inf, -np.inf, 1e38, -0.0], "<f4").tobytes(),
    np.full(64, -32768, "<i2").tobytes(),
)
# A full-scale square wave: the resampling filter rings past [-1, 1] on it.
SQUARE = np.tile(np.array([32767] * 8 + [-32768] * 8, "<i2"), 100).tobytes()

# Mostly plausible values (so raw PCM decodes often), some anything a uint32 can hold.
_USUAL_RATES = st.sampled_from([8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000])
RATES = st.one_of(_USUAL_RATES, _USUAL_RATES, st.integers(900, 400_000), st.integers(0, 2**32 - 1))
CHANNELS = st.one_of(st.integers(1, 2), st.integers(1, 2), st.integers(0, 8), st.integers(0, 2**32 - 1))
ENCODINGS = st.one_of(st.sampled_from(["pcm_s16le", "pcm_f32le"]), st.sampled_from(["pcm_s16le", "pcm_f32le"]),
                      st.sampled_from(["", "PCM_S16LE", "mp3"]), st.text(max_size=12))
