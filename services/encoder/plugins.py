"""Modality plug-ins: validate a request, turn its media into one embedding plus quality signals.

The server, publishing and error handling are shared (encoding.py); a plug-in
only knows its modality. Raw media never leaves a plug-in: it returns a vector.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

import numpy as np

from merc.inference import InferenceClient
from merc.v1 import common_pb2, encoder_pb2


class InvalidInput(ValueError):
    """The request cannot be encoded as given (maps to INVALID_ARGUMENT)."""


@dataclass
class Encoded:
    vector: np.ndarray
    quality: common_pb2.QualitySignals
    model: str
    version: str


class ModalityPlugin(abc.ABC):
    name: str
    modality: int

    def __init__(self, inference: InferenceClient, settings) -> None:
        self.inference = inference
        self.settings = settings

    @abc.abstractmethod
    def has_input(self, request: encoder_pb2.EncodeRequest) -> bool: ...

    @abc.abstractmethod
    def encode(self, request: encoder_pb2.EncodeRequest) -> Encoded:
        """Raise InvalidInput for bad media; InferenceUnavailable propagates."""


_SPACE = re.compile(r"\s+")


class TextPlugin(ModalityPlugin):
    name = "text"
    modality = common_pb2.MODALITY_TEXT
    model = "text_encoder"

    def has_input(self, request: encoder_pb2.EncodeRequest) -> bool:
        return bool(request.text.strip())

    def encode(self, request: encoder_pb2.EncodeRequest) -> Encoded:
        text = _SPACE.sub(" ", request.text).strip()
        if not text:
            raise InvalidInput("text is empty")
        if len(text) > self.settings.max_text_chars:
            raise InvalidInput(f"text has {len(text)} characters; the limit is {self.settings.max_text_chars} (MERC_MAX_TEXT_CHARS)")
        out = self.inference.infer(self.model, {"TEXT": np.array([[text.encode()]], dtype=object)})
        vector = out["EMBEDDING"][0].astype(np.float32)
        return Encoded(vector, common_pb2.QualitySignals(text_length=len(text)), self.model, self.inference.version(self.model))


PLUGINS: dict[str, type[ModalityPlugin]] = {"text": TextPlugin}


def plugin(name: str, inference: InferenceClient, settings) -> ModalityPlugin:
    try:
        return PLUGINS[name](inference, settings)
    except KeyError:
        raise ValueError(f"no encoder plug-in for modality {name!r}; available: {', '.join(PLUGINS)}") from None
