"""Speech emotion from a log-mel spectrogram: a small CNN with time-frequency pooling.

Permissively licensed path (no eGeMAPS): conv blocks -> mean+max pooling over
the whole utterance (any length) -> a 128-d embedding (what the encoder
publishes) -> 7 emotion logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from merc.models.audio_features import N_MELS
from merc.models.layers import DictConfig, conv_stage


@dataclass
class AudioConfig(DictConfig):
    n_mels: int = N_MELS
    channels: tuple[int, ...] = (32, 64, 128, 256)
    embedding: int = 128
    dropout: float = 0.3
    n_labels: int = 7


class AudioCNN(nn.Module):
    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = (1, *cfg.channels)
        self.features = nn.Sequential(*[conv_stage(a, b) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.embed = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.channels[-1], cfg.embedding), nn.ReLU(inplace=True))
        self.head = nn.Linear(cfg.embedding, cfg.n_labels)

    def embedding(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, frames] -> [B, embedding]."""
        h = self.features(mel[:, None])  # [B, C, F', T']
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.embed(h)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embedding(mel)
        return {"embedding": e, "logits": self.head(e)}
