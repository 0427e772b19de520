"""Decode what callers send: audio bytes -> 16 kHz mono float32, image bytes -> greyscale arrays.

Every failure is a ``MediaError`` whose message says what was wrong and what is accepted,
so the entry points can answer INVALID_ARGUMENT, a per-line CLI error, or a dead letter.
The decoded media lives only in the caller's memory; nothing here writes or logs it.
"""

from __future__ import annotations

import io

import numpy as np

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000
PCM = {"pcm_s16le": ("<i2", 32768.0), "pcm_f32le": ("<f4", 1.0)}
CONTAINERS = "WAV, FLAC or OGG"
# Samples decoded, converted and resampled at a time (256 kB of float32): the unit of work and of memory.
BLOCK = 1 << 16


class MediaError(ValueError):
    """The media cannot be used as given."""


def decode_audio(data: bytes, encoding: str = "", sample_rate: int = 0, channels: int = 0,
                 max_seconds: float = 60.0) -> np.ndarray:
    """Bytes of a WAV/FLAC/OGG file, or raw PCM with its rate and channel count -> 16 kHz mono in [-1, 1].

    Decoded block by block and stopped as soon as it is longer than ``max_seconds``, counted in
    decoded samples: a small compressed file of hours of silence, or a header that lies about
    the length, costs at most one block beyond the limit. Memory: the 16 kHz output (64 kB a
    second) and one block, never the whole clip at its own rate.
    """
    if not data:
        raise MediaError("audio is empty")
    if encoding:
        if encoding not in PCM:
            raise MediaError(f"audio encoding {encoding!r} is not supported; use one of {', '.join(PCM)} or leave it empty for {CONTAINERS}")
        if sample_rate <= 0 or channels <= 0:
            raise MediaError(f"raw {encoding} audio needs sample_rate and channels")
        _check_rate(sample_rate)
        dtype, scale = PCM[encoding]
        width = np.dtype(dtype).itemsize * channels
        if len(data) % width:
            raise MediaError(f"raw {encoding} audio of {len(data)} bytes is not a whole number of {channels}-channel samples")
        frames = len(data) // width
        if frames > max_seconds * sample_rate:
            raise MediaError(f"audio is {frames / sample_rate:.1f} s long; the limit is {max_seconds:g} s (MERC_MAX_AUDIO_SECONDS)")
        pcm = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
        step = max(1, BLOCK // channels)
        # The mean over channels converts as it goes (no float copy of the whole input).
        return _to_16k_mono((pcm[i : i + step].mean(axis=1, dtype=np.float32) / np.float32(scale)
                             for i in range(0, frames, step)), sample_rate, max_seconds)
    import soundfile as sf

    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as e:  # soundfile raises several types for corrupt input
        raise MediaError(f"cannot decode audio ({CONTAINERS} expected): {e}") from None
    with f:
        _check_rate(f.samplerate)
        step = max(1, BLOCK // f.channels)

        def blocks():
            done = 0
            while True:
                try:
                    # At most `step` frames, however many the header claims; fewer at the real end.
                    block = f.read(step, dtype="float32", always_2d=True)
                except Exception as e:  # e.g. a header claiming more than there is: libsndfile cannot seek past the end
                    raise MediaError(f"cannot decode audio past {done / f.samplerate:.1f} s (the header says "
                                     f"{f.frames / f.samplerate:.1f} s): {e}") from None
                if not len(block):
                    return
                done += len(block)
                yield block.mean(axis=1)

        return _to_16k_mono(blocks(), f.samplerate, max_seconds)


def _check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise MediaError(f"audio sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")


def _to_16k_mono(blocks, rate: int, max_seconds: float) -> np.ndarray:
    """Mono blocks at ``rate`` -> one 16 kHz clip in [-1, 1], refused once past ``max_seconds``."""
    from merc.media.resampling import Resampler

    resampler = Resampler(int(rate))
    for mono in blocks:
        if resampler.n_in + len(mono) > max_seconds * rate:
            raise MediaError(f"audio is over {max_seconds:g} s long (decoding stopped there); the limit is {max_seconds:g} s "
                             "(MERC_MAX_AUDIO_SECONDS)")
        if not np.isfinite(mono).all():
            raise MediaError("audio contains NaN or infinite samples")
        resampler.feed(np.clip(mono, -1.0, 1.0))
    if resampler.n_in == 0:
        raise MediaError("audio has no samples")
    # The filter rings past full scale next to clipped samples: clip again to stay in [-1, 1].
    return np.clip(resampler.finish(), -1.0, 1.0).astype(np.float32)


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
