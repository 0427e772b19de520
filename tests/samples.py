"""Synthetic media for tests: no corpus needed, nothing personal in it."""

import io

import numpy as np
import soundfile as sf
from PIL import Image


def voice_wav(seconds=1.5, rate=44_100) -> bytes:
    """A vowel-like harmonic tone with pauses, at a rate the encoder must resample."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    wave = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / rate) / k for k in range(1, 6))
    wave *= (np.sin(2 * np.pi * 2 * t) > -0.3) * 0.2
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def face_png(seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((64, 64)) * 60 + 100).astype(np.uint8)
    img[20:26, 16:26] = img[20:26, 38:48] = 20  # eyes
    img[44:48, 22:42] = 30  # mouth
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
