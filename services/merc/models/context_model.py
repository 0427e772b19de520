"""Causal dialogue-context model: per-utterance fusion, then a small transformer over the last K.

Two stages, kept apart on purpose:

1. ``fuse``: each utterance on its own -> a "fused" vector [H]. It depends on that
   utterance only, so the service can compute it once, store it, and hand it back
   as context for later utterances. (Audio/vision experts and the reliability gate
   of DESIGN.md §6 slot in here; today only the text expert exists.)
2. ``contextualise``: the current fused vector plus the K previous ones of the same
   conversation (oldest first, right-aligned: slot K-1 is the immediately previous
   utterance; missing slots are marked invalid and never attended) -> emotion and
   sentiment logits read at the current position.

Training uses exactly this computation: ``forward_dialogues`` fuses every utterance of
a batch of dialogues, then gathers each target's window of K previous fused vectors
(gradients flow through them). Feeding utterances one at a time through ``forward``
with the stored fused vectors therefore reproduces training-time outputs exactly
(tests/unit/test_context_model.py proves it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from merc.labels import MODALITIES
from merc.models.layers import DictConfig

N_MODALITIES = len(MODALITIES)  # mask / weight order: text, audio, vision


@dataclass
class ContextConfig(DictConfig):
    text_dim: int = 384
    hidden: int = 128
    context: int = 8  # K previous utterances
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    input_dropout: float = 0.2  # on the frozen sentence embedding: the cheapest regulariser here
    max_speakers: int = 8
    n_labels: int = 7
    n_sentiments: int = 3


class TextExpert(nn.Module):
    """Sentence embedding -> hidden space."""

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(cfg.input_dropout),
            nn.Linear(cfg.text_dim, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.LayerNorm(cfg.hidden),
        )

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.net(text)


class ModalityFusion(nn.Module):
    """Mixture of modality experts weighted by availability.

    Only the text expert exists yet, so the weights are the availability mask restricted
    to the experts present, normalised to sum to one; an utterance with no usable modality
    gets a learned "nothing observed" vector. The reliability gate replaces the fixed
    weights later without changing this interface.
    """

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        self.text = TextExpert(cfg)
        self.register_buffer("present", torch.tensor([1.0, 0.0, 0.0]), persistent=False)
        self.nothing = nn.Parameter(torch.zeros(cfg.hidden))

    def forward(self, text: torch.Tensor, modality_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        avail = modality_mask.to(text.dtype) * self.present
        total = avail.sum(-1, keepdim=True)
        weights = avail / total.clamp(min=1e-6)
        experts = self.text(text).unsqueeze(1)  # [B, 1, H]; audio/vision experts stack here
        fused = (weights[:, :1, None] * experts).sum(1) + (total == 0).to(text.dtype) * self.nothing
        return fused, weights


class Block(nn.Module):
    """Pre-norm transformer block with an explicit key mask (no fused fast path, so train and eval
    modes run the same arithmetic)."""

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)
        self.ff = nn.Sequential(
            nn.Linear(cfg.hidden, 2 * cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.hidden, cfg.hidden)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(h // self.heads)
        scores = scores.masked_fill(~key_ok[:, None, None, :], float("-inf"))
        att = self.drop(scores.softmax(-1))
        x = x + self.drop(self.proj((att @ v).transpose(1, 2).reshape(b, n, h)))
        return x + self.drop(self.ff(self.norm2(x)))


class DialogueContext(nn.Module):
    """Window [K previous fused + current] -> representation of the current utterance.

    Every slot gets a speaker embedding (index by first appearance, modulo max_speakers),
    a same-speaker-as-current flag (the part that generalises across dialogues) and its
    distance to the current utterance (0..K). The window only ever holds the past, so
    attention inside it is unrestricted except for invalid slots.
    """

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        self.cfg = cfg
        self.speaker = nn.Embedding(cfg.max_speakers, cfg.hidden)
        self.same = nn.Embedding(2, cfg.hidden)
        self.distance = nn.Embedding(cfg.context + 1, cfg.hidden)
        # Slot j of the window lies K - j utterances back; the current one (last) at 0.
        self.register_buffer("dist", torch.arange(cfg.context, -1, -1), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, fused, speaker, ctx_fused, ctx_speaker, ctx_valid) -> torch.Tensor:
        x = torch.cat([ctx_fused, fused.unsqueeze(1)], 1)  # [B, K+1, H]
        spk = torch.cat([ctx_speaker, speaker.unsqueeze(1)], 1).long()
        ok = torch.cat([ctx_valid.bool(), torch.ones_like(speaker, dtype=torch.bool).unsqueeze(1)], 1)
        same = (spk == speaker.long().unsqueeze(1)).long()
        x = x + self.speaker(spk % self.cfg.max_speakers) + self.same(same) + self.distance(self.dist)
        for block in self.blocks:
            x = block(x, ok)
        return self.norm(x[:, -1])


class ContextModel(nn.Module):
    def __init__(self, cfg: ContextConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ContextConfig()
        self.fusion = ModalityFusion(cfg)
        self.context = DialogueContext(cfg)
        self.emotion = nn.Linear(cfg.hidden, cfg.n_labels)
        self.sentiment = nn.Linear(cfg.hidden, cfg.n_sentiments)

    def fuse(self, text: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        return self.fusion(text, modality_mask)[0]

    def contextualise(self, fused, weights, speaker, ctx_fused, ctx_speaker, ctx_valid) -> dict[str, torch.Tensor]:
        h = self.context(fused, speaker, ctx_fused, ctx_speaker, ctx_valid)
        return {"logits": self.emotion(h), "sentiment_logits": self.sentiment(h), "fused": fused, "weights": weights}

    def forward(self, text, modality_mask, speaker, ctx_fused, ctx_speaker, ctx_valid) -> dict[str, torch.Tensor]:
        """One step per utterance: context arrives as the stored fused vectors of the last K utterances."""
        fused, weights = self.fusion(text, modality_mask)
        return self.contextualise(fused, weights, speaker, ctx_fused, ctx_speaker, ctx_valid)

    def forward_dialogues(self, text, modality_mask, speaker, window) -> dict[str, torch.Tensor]:
        """Training path: all utterances of some dialogues concatenated ([N, ...]) and ``window`` [N, K]
        from ``window_indices`` (row i: indices of i's K predecessors, -1 where none)."""
        fused, weights = self.fusion(text, modality_mask)
        valid = window >= 0
        idx = window.clamp(min=0)
        # Zero the invalid slots: they are never attended, but zeros are also what a caller passes.
        ctx_fused = fused[idx] * valid.unsqueeze(-1).to(fused.dtype)
        ctx_speaker = torch.where(valid, speaker[idx], torch.zeros_like(idx))
        return self.contextualise(fused, weights, speaker, ctx_fused, ctx_speaker, valid)


def window_indices(lengths: list[int], context: int) -> torch.Tensor:
    """[sum(lengths), K] indices into the concatenation of dialogues of the given lengths.

    Row for utterance t of a dialogue starting at offset o: slot j holds o + t - K + j
    (oldest first, the previous utterance in slot K-1), or -1 before the dialogue's start.
    """
    rows = []
    offset = 0
    back = torch.arange(-context, 0)  # relative positions of slots 0..K-1
    for n in lengths:
        t = torch.arange(n).unsqueeze(1) + back  # [n, K]
        rows.append(torch.where(t >= 0, t + offset, torch.full_like(t, -1)))
        offset += n
    return torch.cat(rows) if rows else torch.zeros(0, context, dtype=torch.long)
