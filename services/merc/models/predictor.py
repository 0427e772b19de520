"""The fusion/context model as served: load a version directory, answer dict-in/dict-out.

A version directory (``model_repository/fusion/1``) holds
- ``config.json``: ContextConfig fields plus ``version``,
- ``weights.safetensors``: the ContextModel state dict,
- ``calibration.json``: ``temperature`` and ``conformal`` {``threshold``, ``coverage``}.

Triton's adapter (model_repository/fusion/1/model.py) and the in-process client both
call ``FusionPredictor.infer``, so the two modes read the same files and run the same code.

Inputs:  TEXT f32 [B,384], MODALITY_MASK f32 [B,3] (text, audio, vision), SPEAKER i64 [B,1],
         CTX_FUSED f32 [B,K,H], CTX_SPEAKER i64 [B,K], CTX_VALID f32 [B,K]
Outputs: PROBS f32 [B,7] (softmax of LOGITS / temperature), LOGITS f32 [B,7],
         SENTIMENT f32 [B,3], FUSED f32 [B,H], WEIGHTS f32 [B,3],
         IN_SET f32 [B,7] (1 for the labels of the split-conformal prediction set),
         COVERAGE f32 [B,1] (the set's stated coverage)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from merc.calibration import prediction_set
from merc.models.context_model import ContextConfig, ContextModel

INPUTS = ("TEXT", "MODALITY_MASK", "SPEAKER", "CTX_FUSED", "CTX_SPEAKER", "CTX_VALID")
OUTPUTS = ("PROBS", "LOGITS", "SENTIMENT", "FUSED", "WEIGHTS", "IN_SET", "COVERAGE")


class FusionPredictor:
    def __init__(self, directory: str | Path, device: str = "cpu"):
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        calibration = json.loads((directory / "calibration.json").read_text())
        self.directory = directory
        self.config = ContextConfig.from_dict(config)
        self._version = str(config.get("version", "unversioned"))
        self.temperature = float(calibration["temperature"])
        self._threshold = float(calibration["conformal"]["threshold"])
        self._coverage = float(calibration["conformal"]["coverage"])
        self.device = torch.device(device)
        self.model = ContextModel(self.config)
        self.model.load_state_dict(load_file(str(directory / "weights.safetensors")))
        # eval(): no dropout, so a replay yields identical events (DESIGN.md §5).
        self.model.to(self.device).eval()

    @property
    def K(self) -> int:
        return self.config.context

    @property
    def H(self) -> int:
        return self.config.hidden

    @property
    def version(self) -> str:
        return self._version

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        """Input shapes without the batch dimension (as Triton's metadata gives them)."""
        c = self.config
        return {
            "TEXT": [c.text_dim],
            "MODALITY_MASK": [3],
            "SPEAKER": [1],
            "CTX_FUSED": [c.context, c.hidden],
            "CTX_SPEAKER": [c.context],
            "CTX_VALID": [c.context],
        }

    @property
    def conformal_threshold(self) -> float:
        return self._threshold

    @property
    def conformal_coverage(self) -> float:
        return self._coverage

    def _tensor(self, inputs: dict[str, np.ndarray], name: str, dtype, shape: tuple) -> torch.Tensor:
        if name not in inputs:
            raise KeyError(f"missing input {name}")
        a = np.asarray(inputs[name])
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = ",".join("B" if s is None else str(s) for s in shape)
            raise ValueError(f"{name} must have shape [{want}], got {list(a.shape)}")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(self.device)

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self.config
        text = self._tensor(inputs, "TEXT", np.float32, (None, c.text_dim))
        b = text.shape[0]
        out = self.model(
            text,
            self._tensor(inputs, "MODALITY_MASK", np.float32, (b, 3)),
            self._tensor(inputs, "SPEAKER", np.int64, (b, 1))[:, 0],
            self._tensor(inputs, "CTX_FUSED", np.float32, (b, c.context, c.hidden)),
            self._tensor(inputs, "CTX_SPEAKER", np.int64, (b, c.context)),
            self._tensor(inputs, "CTX_VALID", np.float32, (b, c.context)) > 0.5,
        )
        logits = out["logits"]
        as_np = lambda t: t.float().cpu().numpy()  # noqa: E731
        probs = as_np(torch.softmax(logits / self.temperature, -1))
        in_set = np.zeros_like(probs)
        for i, p in enumerate(probs):
            in_set[i, prediction_set(p, self._threshold)] = 1.0
        return {
            "PROBS": probs,
            "IN_SET": in_set,
            "COVERAGE": np.full((b, 1), self._coverage, np.float32),
            "LOGITS": as_np(logits),
            "SENTIMENT": as_np(torch.softmax(out["sentiment_logits"], -1)),
            "FUSED": as_np(out["fused"]),
            "WEIGHTS": as_np(out["weights"]),
        }
