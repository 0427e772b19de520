"""The audio and face emotion encoders as served: load a version directory, answer dict-in/dict-out.

Like FusionPredictor, `infer` is the contract shared by the Triton adapters
(model_repository/{audio,face}_encoder/1/model.py) and the in-process client.

audio_encoder: WAVE f32 [B, samples] (16 kHz mono, zero-padded; LENGTH i64 [B, 1] gives each
               clip's true length) -> EMBEDDING f32 [B, 128], PROBS f32 [B, 7]
face_encoder:  FACES u8 [B, 48, 48] greyscale crops -> EMBEDDING f32 [B, 128], PROBS f32 [B, 7]

``device`` places the weights and the work (a GPU instance's "cuda:N", merc.models.batching.device);
arrays come in and go out on the host either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from merc.models import graph_runner
from merc.models.audio_cnn import AudioCNN, AudioConfig
from merc.models.audio_features import HOP, log_mel, trim_silence
from merc.models.face_cnn import FaceCNN, FaceConfig
from merc.models.graphs import AudioGraph, FaceGraph


def _load(directory: Path, model_cls, config_cls, device: torch.device):
    config = json.loads((directory / "config.json").read_text())
    model = model_cls(config_cls.from_dict(config))
    model.load_state_dict(load_file(str(directory / "weights.safetensors")))
    return model.to(device).eval(), str(config.get("version", "unversioned"))


class AudioEmotionEncoder:
    def __init__(self, directory: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.version = _load(Path(directory), AudioCNN, AudioConfig, self.device)
        self.run = graph_runner.load(AudioGraph(self.model), Path(directory), self.version)

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wave = np.asarray(inputs["WAVE"], dtype=np.float32)
        lengths = np.asarray(inputs.get("LENGTH", np.full((len(wave), 1), wave.shape[1])), dtype=np.int64)[:, 0]
        embeddings, probs = [], []
        # Clips differ in length: each goes alone (padding would change its pooled statistics).
        # Each conv stage halves the frames: fewer than 2**stages (a clip, or what trimming leaves of
        # it, under 0.15 s) pools to nothing. Pad such a clip with silence up to that.
        min_samples = (2 ** len(self.model.cfg.channels) - 1) * HOP
        for w, n in zip(wave, lengths, strict=True):
            clip = trim_silence(torch.from_numpy(w[: max(int(n), 1)]).to(self.device))
            clip = torch.nn.functional.pad(clip, (0, max(0, min_samples - clip.shape[-1])))
            # A tensor, not an array: on a GPU the spectrogram stays there (ONNX Runtime serves CPU
            # instances only, and takes a host tensor as an array).
            out = self.run(log_mel(clip))
            embeddings.append(out["EMBEDDING"][0])
            probs.append(out["PROBS"][0])
        return {"EMBEDDING": np.stack(embeddings), "PROBS": np.stack(probs)}


class FaceEmotionEncoder:
    def __init__(self, directory: str | Path, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model, self.version = _load(Path(directory), FaceCNN, FaceConfig, self.device)
        self.run = graph_runner.load(FaceGraph(self.model), Path(directory), self.version)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(np.asarray(inputs["FACES"], dtype=np.uint8))
