"""Who is speaking: a d-vector speaker encoder (GE2E, Wan et al. 2018) with published pretrained weights.

40 mel bands (Slaney scale, power, no log) every 10 ms -> a 3-layer LSTM (256 units) -> its last state
-> linear + ReLU -> a 256-d vector of unit length. Voices of one person land close together in cosine
distance; what they say and how they feel moves the vector far less than who says it.

The weights are Resemblyzer 0.1.4's (`resemblyzer/pretrained.pt`, Apache-2.0; trained on LibriSpeech,
VoxCeleb 1 and 2), read from the installed wheel. The package itself is never imported: its voice
activity detector needs `pkg_resources`, which current setuptools no longer has, and MERC has its own.
`make install` installs the wheel without its dependencies (`pip install --no-deps resemblyzer==0.1.4`).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from merc.media import SAMPLE_RATE
from merc.models.layers import DictConfig

ENABLE = "pip install --no-deps resemblyzer==0.1.4"
PACKAGE = "resemblyzer"
WEIGHTS = "pretrained.pt"


@dataclass
class SpeakerConfig(DictConfig):
    n_mels: int = 40
    window_ms: int = 25
    hop_ms: int = 10
    hidden: int = 256
    layers: int = 3
    embedding: int = 256
    # The encoder was trained on 1.6 s windows; a longer segment is the mean of its half-overlapping windows.
    window_frames: int = 160
    # Loudness the weights were trained at (dBFS): quieter speech is raised to it, louder left alone.
    target_dbfs: float = -30.0


class SpeakerEncoder(nn.Module):
    def __init__(self, cfg: SpeakerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SpeakerConfig()
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden, cfg.layers, batch_first=True)
        self.linear = nn.Linear(cfg.hidden, cfg.embedding)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels [B, frames, n_mels] -> [B, embedding], unit length."""
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / (e.norm(dim=1, keepdim=True) + 1e-5)


def _slaney_mel(hz: torch.Tensor) -> torch.Tensor:
    # Linear below 1 kHz, logarithmic above: the scale the weights were trained with (not HTK's).
    log_step = math.log(6.4) / 27.0
    return torch.where(hz < 1000.0, hz * 3.0 / 200.0, 15.0 + torch.log(hz.clamp(min=1e-6) / 1000.0) / log_step)


def _slaney_hz(mel: torch.Tensor) -> torch.Tensor:
    log_step = math.log(6.4) / 27.0
    return torch.where(mel < 15.0, mel * 200.0 / 3.0, 1000.0 * torch.exp(log_step * (mel - 15.0)))


@lru_cache(maxsize=2)
def mel_filterbank(n_mels: int, n_fft: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters, 0 Hz to Nyquist, each of unit area (Slaney normalisation)."""
    edges = _slaney_hz(torch.linspace(0.0, float(_slaney_mel(torch.tensor(sr / 2.0))), n_mels + 2))
    bins = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = torch.clamp(torch.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)), min=0.0)
    return tri * (2.0 / (upper - lower))


def mel_frames(wave: np.ndarray, cfg: SpeakerConfig | None = None) -> torch.Tensor:
    """16 kHz mono float -> [frames, n_mels], loudness raised to the training level first."""
    cfg = cfg or SpeakerConfig()
    x = torch.as_tensor(wave, dtype=torch.float32)
    rms = float(x.pow(2).mean().sqrt()) if len(x) else 0.0
    if rms > 0:
        gain_db = cfg.target_dbfs - 20.0 * math.log10(rms)
        if gain_db > 0:
            x = x * (10.0 ** (gain_db / 20.0))
    n_fft = SAMPLE_RATE * cfg.window_ms // 1000
    hop = SAMPLE_RATE * cfg.hop_ms // 1000
    if len(x) < n_fft:
        x = nn.functional.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, hop, n_fft, window=torch.hann_window(n_fft), center=True, return_complex=True)
    power = spec.real**2 + spec.imag**2
    return (mel_filterbank(cfg.n_mels, n_fft) @ power).T


def weights_path() -> Path | None:
    """Where the installed wheel keeps the weights (found without importing the package), or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS
    return path if path.is_file() else None


def available() -> str | None:
    """None when speakers can be told apart; else why not and how to enable it."""
    if weights_path() is None:
        return f"speaker diarisation is not installed; utterances of a bare recording share one speaker (to enable it: {ENABLE})"
    return None


@lru_cache(maxsize=1)
def load() -> SpeakerEncoder:
    path = weights_path()
    if path is None:
        raise FileNotFoundError(available())
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    model = SpeakerEncoder()
    # The checkpoint also holds GE2E's training-only similarity scale and bias.
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
    return model.eval()


@torch.inference_mode()
def embed(waves: list[np.ndarray], model: SpeakerEncoder | None = None) -> np.ndarray:
    """One unit vector per segment [len(waves), embedding]: the mean of its half-overlapping 1.6 s windows."""
    model = model or load()
    n, out = model.cfg.window_frames, []
    for wave in waves:
        mel = mel_frames(wave, model.cfg)
        starts = range(0, max(1, len(mel) - n // 2), n // 2) if len(mel) > n else [0]
        windows = [mel[s : s + n] for s in starts]
        # Windows shorter than the rest (the tail) run alone: padding would be read as silence.
        full = [w for w in windows if len(w) == len(windows[0])]
        parts = [model(torch.stack(full))] + [model(w[None]) for w in windows[len(full):]]
        e = torch.cat(parts).mean(dim=0)
        out.append((e / (e.norm() + 1e-5)).numpy())
    return np.stack(out) if out else np.zeros((0, model.cfg.embedding), np.float32)
