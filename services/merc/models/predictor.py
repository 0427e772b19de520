"""The fusion/context model as served: load a version directory, answer dict-in/dict-out.

A version directory (``model_repository/fusion/1``) holds
- ``config.json``: ContextConfig fields plus ``version``,
- ``weights.safetensors``: the ContextModel state dict,
- ``calibration.json``: per modality-availability pattern ``temperature`` and conformal
  ``threshold`` (merc.pipeline.calibration.fit_patterns), with a pooled ``default``, and a
  temperature per modality expert (``experts``: fit_experts),
- ``text_shift.safetensors`` (optional): where text stops resembling the training text
  (merc.pipeline.text_shift); beyond it the text's say in PROBS and IN_SET shrinks.

Triton's adapter (model_repository/fusion/1/model.py) and the in-process client both
call ``FusionPredictor.infer``, so the two modes read the same files and run the same code.

Inputs:  TEXT f32 [B,384], AUDIO f32 [B,128], VISION f32 [B,128] (zeros where absent),
         MODALITY_MASK f32 [B,3] (text, audio, vision), QUALITY f32 [B,7] (merc.media.quality.features),
         SPEAKER i64 [B,1], CTX_FUSED f32 [B,K,H], CTX_SPEAKER i64 [B,K], CTX_VALID f32 [B,K]
Outputs: PROBS f32 [B,7] (softmax of LOGITS / the pattern's temperature; leaning off distrusted text,
         TEXT_SHIFT below), LOGITS f32 [B,7],
         SENTIMENT f32 [B,3], FUSED f32 [B,H], WEIGHTS f32 [B,3] (the gate's; 0 for absent),
         EXPERT_PROBS f32 [B,3,7] (each modality's own posterior, at its expert's temperature; 0 where
         absent), INCONGRUENCE f32 [B,1]
         (merc.pipeline.incongruence), IN_SET f32 [B,7] (1 for the labels of the split-conformal
         prediction set), COVERAGE f32 [B,1] (the set's stated coverage), TEXT_SHIFT f32 [B,1] (the
         share of the text's say taken away in PROBS and IN_SET, merc.pipeline.text_shift)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from merc.media import quality
from merc.models import graph_runner
from merc.models.context_model import ContextConfig, ContextModel
from merc.models.graphs import FusionGraph
from merc.pipeline import incongruence, text_shift
from merc.pipeline.calibration import expert_temperatures, for_pattern, pattern_key, prediction_set, softmax

INPUTS = FusionGraph.INPUTS
TEXT_QUALITY = quality.FIELDS.index("text_length")


class FusionPredictor:
    def __init__(self, directory: str | Path, device: str | torch.device = "cpu"):
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        calibration = json.loads((directory / "calibration.json").read_text())
        self.directory = directory
        self.config = ContextConfig.from_dict(config)
        self._version = str(config.get("version", "unversioned"))
        self.calibration = calibration
        self._coverage = float(calibration["coverage"])
        self._expert_t = expert_temperatures(calibration)
        self.device = torch.device(device)
        self.model = ContextModel(self.config)
        self.model.load_state_dict(load_file(str(directory / "weights.safetensors")))
        # eval(): no dropout, so a replay yields identical events (ARCHITECTURE.md, exactly-once).
        self.model.to(self.device).eval()
        self.run = graph_runner.load(FusionGraph(self.model), directory, self._version)
        shift = directory / text_shift.FILE
        self.text_shift = text_shift.TextShift.load(shift, self.config.text_dim) if shift.is_file() else None

    @property
    def version(self) -> str:
        return self._version

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        """Input shapes without the batch dimension (as Triton's metadata gives them)."""
        c = self.config
        return {
            "TEXT": [c.text_dim],
            "AUDIO": [c.audio_dim],
            "VISION": [c.vision_dim],
            "MODALITY_MASK": [3],
            "QUALITY": [c.quality_dim],
            "SPEAKER": [1],
            "CTX_FUSED": [c.context, c.hidden],
            "CTX_SPEAKER": [c.context],
            "CTX_VALID": [c.context],
        }

    def _array(self, inputs: dict[str, np.ndarray], name: str, dtype, shape: tuple) -> np.ndarray:
        if name not in inputs:
            raise KeyError(f"missing input {name}")
        a = np.asarray(inputs[name])
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=False)):
            want = ",".join("B" if s is None else str(s) for s in shape)
            raise ValueError(f"{name} must have shape [{want}], got {list(a.shape)}")
        return np.ascontiguousarray(a, dtype=dtype)

    def _calibrated(self, logits: np.ndarray, mask_row: np.ndarray) -> tuple[np.ndarray, float]:
        fit = for_pattern(self.calibration, pattern_key(mask_row))
        return softmax(logits, fit["temperature"]), fit["threshold"]

    def posterior(self, logits: np.ndarray, mask_row: np.ndarray, without_text: np.ndarray | None = None,
                  distrust: float = 0.0) -> tuple[np.ndarray, float]:
        """One utterance's served posterior and conformal threshold from its fused logits: its pattern's
        calibration, then, if its text is distrusted, mixed toward ``without_text`` (the logits with the
        text masked) at that pattern's calibration (merc.pipeline.text_shift)."""
        p, threshold = self._calibrated(logits, mask_row)
        if distrust <= 0:
            return p, threshold
        other = np.asarray(mask_row, dtype=np.float32).copy()
        other[0] = 0.0
        q, q_threshold = self._calibrated(without_text, other) if other.any() else (None, 1.0)
        return text_shift.mix(p, threshold, q, q_threshold, distrust)

    def distrust(self, text: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[B] weight taken from each utterance's text (merc.pipeline.text_shift); 0 without text or a fitted shift."""
        if self.text_shift is None:
            return np.zeros(len(text))
        return self.text_shift.weight(text) * (mask[:, 0] > 0.5)

    def _without_text(self, arrays: list[np.ndarray], rows: np.ndarray) -> dict[int, np.ndarray]:
        """The fused logits of ``rows`` with their text masked out, as the fusion sees an utterance without words."""
        if rows.size == 0:
            return {}
        masked = [a[rows].copy() for a in arrays]
        masked[INPUTS.index("TEXT")][:] = 0.0
        masked[INPUTS.index("MODALITY_MASK")][:, 0] = 0.0
        masked[INPUTS.index("QUALITY")][:, TEXT_QUALITY] = 0.0
        return dict(zip(rows.tolist(), self.run(*masked)["LOGITS"], strict=True))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c = self.config
        text = self._array(inputs, "TEXT", np.float32, (None, c.text_dim))
        b = text.shape[0]
        arrays = [self._array(inputs, name, np.int64 if name in ("SPEAKER", "CTX_SPEAKER") else np.float32,
                              (b, *self.input_shapes[name])) for name in INPUTS]
        out = self.run(*arrays)
        logits, mask_np = out["LOGITS"], arrays[INPUTS.index("MODALITY_MASK")]
        probs = np.zeros_like(logits)
        in_set = np.zeros_like(logits)
        distrust = self.distrust(text, mask_np)
        without = self._without_text(arrays, np.flatnonzero(distrust > 0))
        for i, row in enumerate(logits):
            p, threshold = self.posterior(row, mask_np[i], without.get(i), float(distrust[i]))
            probs[i] = p
            in_set[i, prediction_set(p, threshold)] = 1.0
        # Each expert at its own temperature (calibration.json "experts").
        expert_probs = softmax(out["EXPERT_LOGITS"].astype(np.float64) / self._expert_t[None, :, None]).astype(np.float32)
        return {
            "PROBS": probs,
            "IN_SET": in_set,
            "COVERAGE": np.full((b, 1), self._coverage, np.float32),
            "LOGITS": logits,
            "SENTIMENT": out["SENTIMENT"],
            "FUSED": out["FUSED"],
            "WEIGHTS": out["WEIGHTS"],
            "EXPERT_PROBS": expert_probs * mask_np[:, :, None],
            "INCONGRUENCE": incongruence.score(expert_probs, mask_np).astype(np.float32)[:, None],
            "TEXT_SHIFT": distrust.astype(np.float32)[:, None],
        }
