"""Decode what callers send: audio bytes -> 16 kHz mono float32, image bytes -> greyscale arrays.

Every failure is a ``MediaError`` whose message says what was wrong and what is accepted,
so the entry points can answer INVALID_ARGUMENT, a per-line CLI error, or a dead letter.
The decoded media lives only in the caller's memory; nothing here writes or logs it.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
PCM = {"pcm_s16le": ("<i2", 32768.0), "pcm_f32le": ("<f4", 1.0)}
CONTAINERS = "WAV, FLAC or OGG"


class MediaError(ValueError):
    """The media cannot be used as given."""


def decode_audio(data: bytes, encoding: str = "", sample_rate: int = 0, channels: int = 0,
                 max_seconds: float = 60.0) -> np.ndarray:
    """Bytes of a WAV/FLAC/OGG file, or raw PCM with its rate and channel count -> 16 kHz mono in [-1, 1]."""
    if not data:
        raise MediaError("audio is empty")
    if encoding:
        if encoding not in PCM:
            raise MediaError(f"audio encoding {encoding!r} is not supported; use one of {', '.join(PCM)} or leave it empty for {CONTAINERS}")
        if sample_rate <= 0 or channels <= 0:
            raise MediaError(f"raw {encoding} audio needs sample_rate and channels")
        dtype, scale = PCM[encoding]
        width = np.dtype(dtype).itemsize * channels
        if len(data) % width:
            raise MediaError(f"raw {encoding} audio of {len(data)} bytes is not a whole number of {channels}-channel samples")
        wave = np.frombuffer(data, dtype=dtype).astype(np.float32).reshape(-1, channels) / scale
    else:
        import soundfile as sf

        try:
            wave, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises several types for corrupt input
            raise MediaError(f"cannot decode audio ({CONTAINERS} expected): {e}") from None
    if len(wave) == 0:
        raise MediaError("audio has no samples")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise MediaError(f"audio sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    seconds = len(wave) / sample_rate
    if seconds > max_seconds:
        raise MediaError(f"audio is {seconds:.1f} s long; the limit is {max_seconds:g} s (MERC_MAX_AUDIO_SECONDS)")
    mono = wave.mean(axis=1)
    if not np.isfinite(mono).all():
        raise MediaError("audio contains NaN or infinite samples")
    return resample(np.clip(mono, -1.0, 1.0), int(sample_rate))


def resample(wave: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return wave.astype(np.float32)
    if rate < MIN_SAMPLE_RATE:
        raise MediaError(f"audio sample rate {rate} Hz is too low to carry speech")
    from scipy.signal import resample_poly

    # Exact for the usual rates (44100 Hz: 160/441); an odd rate (16001 Hz) is approximated to
    # 0.1 %, inaudible, where its exact ratio would design a filter of millions of taps.
    ratio = Fraction(SAMPLE_RATE, rate).limit_denominator(1000)
    # The filter rings past full scale next to clipped samples: clip again to stay in [-1, 1].
    return np.clip(resample_poly(wave, ratio.numerator, ratio.denominator), -1.0, 1.0).astype(np.float32)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> greyscale uint8 [H, W]."""
    from PIL import Image

    if not data:
        raise MediaError("image is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise MediaError(f"image is {img.width}x{img.height}; the limit is {max_pixels} pixels (MERC_MAX_IMAGE_PIXELS)")
            return np.asarray(img.convert("L"))
    except MediaError:
        raise
    except Exception as e:  # Pillow raises several types for corrupt input: OSError, ValueError, SyntaxError, ...
        raise MediaError(f"cannot decode image (JPEG or PNG expected): {e or type(e).__name__}") from None
