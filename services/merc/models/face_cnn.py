"""Facial expression from a 48x48 greyscale face crop: a VGG-style CNN.

Four conv stages (two or three 3x3 convs each, batch norm, max pooling) -> global
average pooling -> a 128-d embedding (what the vision encoder pools over frames
and publishes) -> 7 emotion logits. With ``flip_average`` the model also sees each
face mirrored and averages the two at inference: expressions are near-symmetric, and
the mirrored view costs one more pass but no extra weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from merc.models.layers import DictConfig, conv_stage


@dataclass
class FaceConfig(DictConfig):
    size: int = 48
    channels: tuple[int, ...] = (32, 64, 128, 256)
    convs: int = 2  # per stage
    embedding: int = 128
    dropout: float = 0.4
    n_labels: int = 7
    flip_average: bool = False


class FaceCNN(nn.Module):
    def __init__(self, cfg: FaceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = (1, *cfg.channels)
        self.features = nn.Sequential(*[conv_stage(a, b, cfg.convs) for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.embed = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.channels[-1], cfg.embedding), nn.ReLU(inplace=True))
        self.head = nn.Linear(cfg.embedding, cfg.n_labels)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 255] float [B, 48, 48] -> standardised [B, 1, 48, 48], per image (lighting)."""
        x = images.float()[:, None] / 255.0
        return (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: normalised [B, 1, 48, 48]."""
        if self.cfg.flip_average and not self.training:
            b = x.shape[0]
            e = self.embed(self.features(torch.cat([x, x.flip(-1)])).mean(dim=(2, 3)))
            logits = self.head(e)
            return {"embedding": (e[:b] + e[b:]) / 2, "logits": (logits[:b] + logits[b:]) / 2}
        e = self.embed(self.features(x).mean(dim=(2, 3)))
        return {"embedding": e, "logits": self.head(e)}
