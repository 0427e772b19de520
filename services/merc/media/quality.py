"""Quality signals: how trustworthy each modality's embedding is, measured and fed to the fusion gate.

Encoders measure the raw signals (``QualitySignals`` in common.proto) while they still hold the
media; ``features`` maps them to the fixed [0, 1] vector the reliability gate reads, so the
gate sees the same scale whatever encoder produced them.
"""

from __future__ import annotations

import math

import numpy as np

from merc.v1 import common_pb2

# Order of the gate's quality vector: QualitySignals fields in declaration order.
FIELDS = ("text_length", "voiced_ratio", "snr_db", "clipping_ratio", "face_found_ratio", "detector_score", "sharpness")
DIM = len(FIELDS)

_FRAME = 160  # 10 ms at 16 kHz
# The longest text length reported: the gate's text feature is already 1 from 200 characters.
TEXT_LENGTH_CAP = 256
SNR_CAP_DB = 40.0
# Bump when a signal's definition changes: cached training pools are keyed by it.
VERSION = "silero-vad-6.2.3/energy-snr-1/laplacian-1"


def features(q: common_pb2.QualitySignals | dict) -> np.ndarray:
    """[DIM] float32, each in [0, 1]; log scales where the raw signal spans decades."""
    get = (lambda k: float(q.get(k, 0.0))) if isinstance(q, dict) else (lambda k: float(getattr(q, k)))
    return np.array([
        min(math.log1p(get("text_length")) / math.log1p(200.0), 1.0),
        min(max(get("voiced_ratio"), 0.0), 1.0),
        min(max(get("snr_db"), 0.0), SNR_CAP_DB) / SNR_CAP_DB,
        min(max(get("clipping_ratio"), 0.0) * 10.0, 1.0),  # 10 % clipped samples is already ruinous
        min(max(get("face_found_ratio"), 0.0), 1.0),
        min(max(get("detector_score"), 0.0), 1.0),
        min(math.log1p(max(get("sharpness"), 0.0)) / math.log1p(2000.0), 1.0),
    ], dtype=np.float32)


def text_length(chars: int) -> int:
    """The length an utterance's embedding reports: the nearest power of two (in log scale), at most 256; 0 for none.

    An exact count tells whoever reads the record how long a PIN, a name or an amount is; the gate
    only needs the scale. Coarsening moves the gate's feature by at most 0.065 (of 0..1). Training
    (merc.data.fusion_examples) reports lengths through this too, so a retrained model sees what
    serving sends."""
    if chars <= 0:
        return 0
    return min(2 ** round(math.log2(chars)), TEXT_LENGTH_CAP)


def audio_signals(wave: np.ndarray) -> dict[str, float]:
    """Voiced ratio (silero-vad), SNR estimate and clipping of a 16 kHz mono clip in [-1, 1].

    SNR is the ratio of loud-frame to quiet-frame energy (90th vs 10th percentile of 10 ms
    frame energies): crude, but it needs no reference and it falls as noise fills the pauses.
    """
    from merc.media import vad

    wave = np.asarray(wave, dtype=np.float32)
    clipping = float(np.mean(np.abs(wave) >= 0.999)) if wave.size else 0.0
    n = wave.size // _FRAME
    if n == 0:
        return {"voiced_ratio": 0.0, "snr_db": 0.0, "clipping_ratio": clipping}
    energy = np.square(wave[: n * _FRAME].reshape(n, _FRAME)).mean(1) + 1e-10
    floor, loud = np.percentile(energy, 10), np.percentile(energy, 90)
    snr = 10.0 * math.log10(loud / floor)
    return {"voiced_ratio": float(vad.voiced_ratio(wave)), "snr_db": float(min(snr, 99.0)), "clipping_ratio": clipping}


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a greyscale image (0..255): low for blurred faces."""
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())
