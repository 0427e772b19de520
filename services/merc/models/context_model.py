"""Causal dialogue-context model: per-utterance fusion, then a small transformer over the last K.

Two stages, kept apart on purpose:

1. ``ModalityFusion``: each utterance on its own -> a "fused" vector [H]: one expert per
   modality (text; voice and face through their encoders' own heads) mixed by a
   reliability gate that sees the missing-modality mask and the quality signals
   (ARCHITECTURE.md, "Models"). It depends on that utterance only, so the service can compute it
   once, store it, and hand it back as context for later utterances.
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

from merc.media.quality import DIM as QUALITY_DIM
from merc.models.layers import DictConfig
from merc.pipeline.labels import MODALITIES

N_MODALITIES = len(MODALITIES)  # mask / weight order: text, audio, vision


@dataclass
class ContextConfig(DictConfig):
    text_dim: int = 384
    audio_dim: int = 128  # the audio encoder's embedding
    vision_dim: int = 128  # the face encoder's embedding
    quality_dim: int = QUALITY_DIM
    hidden: int = 128
    context: int = 8  # K previous utterances
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    input_dropout: float = 0.2  # on the sentence embedding: the cheapest regulariser here
    gate_hidden: int = 32
    max_speakers: int = 8
    n_labels: int = 7
    n_sentiments: int = 3
    # Emotion logits = context head + the gate-weighted experts' log-posteriors, so a lone clip or
    # face starts from its encoder's answer and the context head learns a correction (off: the
    # context head alone, as the first shipped fusion).
    expert_residual: bool = False


class TextExpert(nn.Module):
    """Sentence embedding -> hidden space, with its own emotion head (the text posterior)."""

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
        self.head = nn.Linear(cfg.hidden, cfg.n_labels)

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(text)
        return h, self.head(h)


class PosteriorExpert(nn.Module):
    """An encoder embedding read through that encoder's own (frozen) emotion head.

    The voice and face encoders were trained on whole corpora (RAVDESS, FER2013); the fusion
    sees far fewer paired examples, so it keeps their classifiers and learns only how to place
    their log-posteriors in the shared space. ``load_head`` copies the encoder's head in.
    """

    def __init__(self, dim: int, cfg: ContextConfig):
        super().__init__()
        self.head = nn.Linear(dim, cfg.n_labels)
        self.head.requires_grad_(False)
        self.net = nn.Sequential(nn.Linear(cfg.n_labels, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden),
                                 nn.LayerNorm(cfg.hidden))

    def load_head(self, head: nn.Linear) -> None:
        with torch.no_grad():
            self.head.weight.copy_(head.weight)
            self.head.bias.copy_(head.bias)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(embedding)
        return self.net(torch.log_softmax(logits, -1)), logits


class ReliabilityGate(nn.Module):
    """Weights over the modality experts from what is present and how good it looks.

    Inputs: the missing-modality mask, the quality vector (merc.media.quality) and each expert's own
    confidence (max probability and normalised entropy), so a muffled mic or a blurred face
    shifts weight to the other modalities. Absent modalities get exactly zero weight.
    """

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        n_in = N_MODALITIES + cfg.quality_dim + 2 * N_MODALITIES
        self.net = nn.Sequential(nn.Linear(n_in, cfg.gate_hidden), nn.GELU(), nn.Linear(cfg.gate_hidden, N_MODALITIES))

    def forward(self, mask: torch.Tensor, quality: torch.Tensor, expert_logits: torch.Tensor) -> torch.Tensor:
        p = expert_logits.softmax(-1)
        confidence = p.max(-1).values * mask
        entropy = -(p * p.clamp(min=1e-9).log()).sum(-1) / math.log(p.shape[-1]) * mask
        scores = self.net(torch.cat([mask, quality, confidence, entropy], -1))
        present = mask > 0.5
        scores = scores.masked_fill(~present, float("-inf"))
        # All absent: softmax of all -inf is NaN; such rows get zero weights instead.
        weights = torch.where(present.any(-1, keepdim=True), scores.softmax(-1), torch.zeros_like(scores))
        return torch.nan_to_num(weights)


@dataclass
class Observation:
    """One utterance's inputs per modality, batched; a modality's rows are ignored where mask is 0."""

    text: torch.Tensor  # [B, text_dim]
    audio: torch.Tensor  # [B, audio_dim]
    vision: torch.Tensor  # [B, vision_dim]
    mask: torch.Tensor  # [B, 3] in MODALITIES order
    quality: torch.Tensor  # [B, quality_dim]

    def __getitem__(self, rows) -> Observation:
        return Observation(self.text[rows], self.audio[rows], self.vision[rows], self.mask[rows], self.quality[rows])


class ModalityFusion(nn.Module):
    """Reliability-gated mixture of modality experts -> one fused vector per utterance."""

    def __init__(self, cfg: ContextConfig):
        super().__init__()
        self.text = TextExpert(cfg)
        self.audio = PosteriorExpert(cfg.audio_dim, cfg)
        self.vision = PosteriorExpert(cfg.vision_dim, cfg)
        self.gate = ReliabilityGate(cfg)
        self.nothing = nn.Parameter(torch.zeros(cfg.hidden))

    def forward(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused [B, H], weights [B, 3], expert logits [B, 3, n_labels])."""
        outs = [self.text(obs.text), self.audio(obs.audio), self.vision(obs.vision)]
        experts = torch.stack([h for h, _ in outs], 1)  # [B, 3, H]
        logits = torch.stack([z for _, z in outs], 1)
        mask = obs.mask.to(experts.dtype)
        weights = self.gate(mask, obs.quality.to(experts.dtype), logits)
        nothing = (mask.sum(-1, keepdim=True) == 0).to(experts.dtype) * self.nothing
        return (weights.unsqueeze(-1) * experts).sum(1) + nothing, weights, logits


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

    def contextualise(self, fused, speaker, ctx_fused, ctx_speaker, ctx_valid) -> dict[str, torch.Tensor]:
        h = self.context(fused, speaker, ctx_fused, ctx_speaker, ctx_valid)
        return {"logits": self.emotion(h), "sentiment_logits": self.sentiment(h), "fused": fused}

    def _with_experts(self, out: dict, weights: torch.Tensor, expert_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.expert_residual:
            # Absent modalities have weight 0, so only what was observed contributes.
            prior = (weights.unsqueeze(-1) * torch.log_softmax(expert_logits, -1)).sum(1)
            out = {**out, "logits": out["logits"] + prior}
        return {**out, "weights": weights, "expert_logits": expert_logits}

    def forward(self, obs: Observation, speaker, ctx_fused, ctx_speaker, ctx_valid) -> dict[str, torch.Tensor]:
        """One step per utterance: context arrives as the stored fused vectors of the last K utterances."""
        fused, weights, expert_logits = self.fusion(obs)
        out = self.contextualise(fused, speaker, ctx_fused, ctx_speaker, ctx_valid)
        return self._with_experts(out, weights, expert_logits)

    def forward_dialogues(self, obs: Observation, speaker, window) -> dict[str, torch.Tensor]:
        """Training path: all utterances of some dialogues concatenated ([N, ...]) and ``window`` [N, K]
        from ``window_indices`` (row i: indices of i's K predecessors, -1 where none)."""
        fused, weights, expert_logits = self.fusion(obs)
        valid = window >= 0
        idx = window.clamp(min=0)
        # Zero the invalid slots: they are never attended, but zeros are also what a caller passes.
        ctx_fused = fused[idx] * valid.unsqueeze(-1).to(fused.dtype)
        ctx_speaker = torch.where(valid, speaker[idx], torch.zeros_like(idx))
        out = self.contextualise(fused, speaker, ctx_fused, ctx_speaker, valid)
        return self._with_experts(out, weights, expert_logits)


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
