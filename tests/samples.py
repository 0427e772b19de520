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


def speech(seconds=2.0, rate=16_000, seed=0) -> np.ndarray:
    """Formant-synthesised syllables (a glottal-like source through vowel resonances, 4 a second):
    speech enough for silero-vad, unlike a plain harmonic tone."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(120 + 25 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3 * t)) / rate
    source = sum(np.sin(k * phase) / k for k in range(1, 30))
    out = np.zeros_like(source)
    n = rate // 4
    for i in range(0, len(source), n):
        seg = source[i : i + n]
        for f in ((700, 1200, 2600), (300, 2300, 3000), (500, 900, 2500))[(i // n) % 3]:
            r, th = np.exp(-np.pi * 90 / rate), 2 * np.pi * f / rate
            out[i : i + n] += lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], seg) * np.sin(np.pi * np.arange(len(seg)) / n) ** 0.5
    out += 0.01 * rng.standard_normal(len(out))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def media_file(path, talk=((1.0, 3.0), (5.0, 7.0)), seconds=8.0, fps=10, audio=True, video=True, size=64):
    """An MP4 (or any container PyAV writes) with speech in the `talk` spans (seconds) and a face in every frame."""
    import av

    rate = 16_000
    wave = np.zeros(int(seconds * rate), np.float32)
    for k, (a, b) in enumerate(talk):
        wave[int(a * rate) : int(a * rate) + int((b - a) * rate)] = speech(b - a, rate, seed=k)
    face = np.asarray(Image.open(io.BytesIO(face_png())).convert("RGB").resize((size, size)))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=fps) if video else None
        if vs is not None:
            vs.width = vs.height = size
            vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=rate, layout="mono") if audio else None
        if vs is not None:
            for _ in range(int(seconds * fps)):
                for packet in vs.encode(av.VideoFrame.from_ndarray(face, format="rgb24")):
                    out.mux(packet)
            out.mux(vs.encode(None))
        if aus is not None:
            for i in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, i : i + 1024], format="flt", layout="mono")
                frame.sample_rate = rate
                for packet in aus.encode(frame):
                    out.mux(packet)
            out.mux(aus.encode(None))
    return path
