"""A tiny deterministic stand-in for the fusion model's contract (unit tests only).

The real model is exercised in test_models and through Triton in the
integration tests; here it only has to honour the tensor contract and depend
on its context, so ordering and replay bugs change the numbers.
"""

from __future__ import annotations

import numpy as np

from merc.inference import InferenceClient

K, H = 4, 8
TEXT_DIM = 16  # what the unit tests publish as text embeddings


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class TinyInference(InferenceClient):
    def __init__(self) -> None:
        self.calls: list[int] = []

    def infer(self, model, inputs):
        if model == "text_encoder":
            texts = [t[0].decode() if isinstance(t[0], bytes) else t[0] for t in inputs["TEXT"]]
            out = np.zeros((len(texts), TEXT_DIM), np.float32)
            for i, t in enumerate(texts):
                out[i, : min(len(t), TEXT_DIM)] = [((ord(c) * 7919) % 97) / 97 for c in t[:TEXT_DIM]]
            return {"EMBEDDING": out}
        self.calls.append(len(inputs["TEXT"]))
        text, valid = inputs["TEXT"], inputs["CTX_VALID"]
        ctx = (inputs["CTX_FUSED"] * valid[..., None]).sum(1) / np.maximum(valid.sum(1, keepdims=True), 1)
        fused = text[:, :H] + 0.5 * ctx
        logits = 3 * fused[:, :7] + 0.1 * inputs["SPEAKER"]
        probs = _softmax(logits)
        n = len(text)
        return {
            "PROBS": probs.astype(np.float32),
            "LOGITS": logits.astype(np.float32),
            "SENTIMENT": _softmax(fused[:, :3]).astype(np.float32),
            "FUSED": fused.astype(np.float32),
            "WEIGHTS": inputs["MODALITY_MASK"] / np.maximum(inputs["MODALITY_MASK"].sum(1, keepdims=True), 1),
            "IN_SET": (probs >= probs.max(1, keepdims=True) * 0.5).astype(np.float32),
            "COVERAGE": np.full((n, 1), 0.9, np.float32),
            "EXPERT_PROBS": np.repeat(probs[:, None], 3, 1).astype(np.float32) * inputs["MODALITY_MASK"][..., None],
            "INCONGRUENCE": np.zeros((n, 1), np.float32),
        }

    def ready(self, model):
        return True

    def version(self, model):
        return f"{model}-tiny"

    def input_shapes(self, model):
        return {"TEXT": [TEXT_DIM], "AUDIO": [128], "VISION": [128], "CTX_FUSED": [K, H]}
