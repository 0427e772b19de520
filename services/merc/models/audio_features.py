"""Log-mel spectrogram in plain torch (no torchaudio): the audio model's input.

16 kHz mono; 25 ms Hann windows every 10 ms; 64 mel bands (HTK scale, 50-8000 Hz);
log(1e-6 + power); each utterance standardised on its own (robust to gain).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from merc.media import SAMPLE_RATE

N_FFT = 512
WIN = 400
HOP = 160
N_MELS = 64


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE, fmin: float = 50.0, fmax: float = 8000.0) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters."""
    mels = torch.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lower) / (centre - lower)
    down = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def log_mel(wave: torch.Tensor) -> torch.Tensor:
    """[B, samples] float -> [B, N_MELS, frames], standardised per utterance."""
    if wave.dim() == 1:
        wave = wave[None]
    if wave.shape[-1] < WIN:
        wave = torch.nn.functional.pad(wave, (0, WIN - wave.shape[-1]))
    spec = torch.stft(wave, N_FFT, HOP, WIN, window=torch.hann_window(WIN, device=wave.device), center=True, return_complex=True)
    power = spec.real**2 + spec.imag**2
    mel = torch.log(mel_filterbank().to(wave.device) @ power + 1e-6)
    return (mel - mel.mean(dim=(1, 2), keepdim=True)) / (mel.std(dim=(1, 2), keepdim=True) + 1e-5)


def trim_silence(wave: torch.Tensor, threshold: float = 0.05, margin_s: float = 0.1) -> torch.Tensor:
    """Cut leading/trailing frames whose RMS is below `threshold` x the loudest frame's.

    Acted corpora (RAVDESS) start and end with ~1 s of silence that carries no emotion;
    live utterances are cut by the caller's segmentation, so this only trims what is left.
    """
    frames = wave[: wave.shape[-1] // HOP * HOP].reshape(-1, HOP)
    if len(frames) == 0:
        return wave
    rms = frames.pow(2).mean(dim=1).sqrt()
    voiced = torch.nonzero(rms > threshold * rms.max()).flatten()
    if len(voiced) == 0:
        return wave
    margin = int(margin_s * SAMPLE_RATE / HOP)
    start = max(0, int(voiced[0]) - margin) * HOP
    end = min(len(frames), int(voiced[-1]) + 1 + margin) * HOP
    return wave[start:end]
