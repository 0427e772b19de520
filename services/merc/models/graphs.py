"""Each served model's tensor maths as one nn.Module with named numpy-shaped inputs and outputs.

These are the parts that can leave Python (merc.models.onnx_export writes them to ONNX); what
stays Python is around them: tokenising (text), silence trimming and the log-mel spectrogram
(audio: its STFT has no clean ONNX form), calibration and prediction sets (fusion). Served either
way through merc.models.graph_runner, so torch and ONNX Runtime run exactly this graph.

Inputs are positional in ``INPUTS`` order; outputs come back in ``OUTPUTS`` order.
``DYNAMIC`` names the axes that vary between calls (the batch, and the text's sequence / the
audio's frames).
"""

from __future__ import annotations

import torch
from torch import nn

from merc.models.audio_cnn import AudioCNN
from merc.models.context_model import ContextModel, Observation
from merc.models.face_cnn import FaceCNN
from merc.models.text_encoder import pool


class FaceGraph(nn.Module):
    """FACES u8 [B, 48, 48] -> EMBEDDING [B, 128], PROBS [B, 7] (normalising included)."""

    INPUTS = ("FACES",)
    OUTPUTS = ("EMBEDDING", "PROBS")
    DYNAMIC = {"FACES": (0,)}

    def __init__(self, cnn: FaceCNN) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.cnn(FaceCNN.normalise(faces))
        return out["embedding"], torch.softmax(out["logits"], -1)


class AudioGraph(nn.Module):
    """MEL f32 [B, n_mels, frames] (merc.models.audio_features.log_mel) -> EMBEDDING [B, 128], PROBS [B, 7]."""

    INPUTS = ("MEL",)
    OUTPUTS = ("EMBEDDING", "PROBS")
    DYNAMIC = {"MEL": (0, 2)}

    def __init__(self, cnn: AudioCNN) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.cnn(mel)
        return out["embedding"], torch.softmax(out["logits"], -1)


class FusionGraph(nn.Module):
    """merc.models.predictor's inputs -> LOGITS, SENTIMENT (probabilities), FUSED, WEIGHTS, EXPERT_LOGITS."""

    INPUTS = ("TEXT", "AUDIO", "VISION", "MODALITY_MASK", "QUALITY", "SPEAKER", "CTX_FUSED", "CTX_SPEAKER", "CTX_VALID")
    OUTPUTS = ("LOGITS", "SENTIMENT", "FUSED", "WEIGHTS", "EXPERT_LOGITS")
    DYNAMIC = {name: (0,) for name in INPUTS}

    def __init__(self, model: ContextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, text, audio, vision, mask, quality, speaker, ctx_fused, ctx_speaker, ctx_valid):
        out = self.model(Observation(text, audio, vision, mask, quality), speaker[:, 0], ctx_fused, ctx_speaker,
                         ctx_valid > 0.5)
        return (out["logits"], torch.softmax(out["sentiment_logits"], -1), out["fused"], out["weights"],
                out["expert_logits"])


class TextGraph(nn.Module):
    """merc.models.text_encoder.tokenize's INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS i64 [B, L] -> EMBEDDING
    [B, dim] (pooled, unit norm).

    ``bert``: the transformer with any LoRA adapter already merged (merc.models.lora.load_merged),
    so the export holds plain weights and the adapter costs nothing at inference. ``token_types``: whether
    it reads the segment ids (BERT) or they only choose the pooled tokens (MPNet).
    """

    INPUTS = ("INPUT_IDS", "ATTENTION_MASK", "TOKEN_TYPE_IDS")
    OUTPUTS = ("EMBEDDING",)
    DYNAMIC = {name: (0, 1) for name in INPUTS}

    def __init__(self, bert: nn.Module, token_types: bool = True) -> None:
        super().__init__()
        self.bert = bert
        self.token_types = token_types

    def forward(self, input_ids, attention_mask, token_type_ids) -> tuple[torch.Tensor]:
        segments = {"token_type_ids": token_type_ids} if self.token_types else {}
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **segments).last_hidden_state
        return (pool(hidden, {"attention_mask": attention_mask, "token_type_ids": token_type_ids}),)
