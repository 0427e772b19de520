"""Modality plug-ins: validate a request, turn its media into one embedding plus quality signals.

The server, publishing and error handling are shared (merc.pipeline.encoder); a plug-in
only knows its modality. Raw media never leaves a plug-in: it returns a vector.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import cv2
import numpy as np

from merc import media
from merc.inference import InferenceClient
from merc.media import faces, quality, transcription
from merc.pipeline import text_context
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

    @abc.abstractmethod
    def warmup_request(self) -> encoder_pb2.EncodeRequest:
        """A small synthetic input that runs the whole path once (lazy loads, Triton's first call)."""


class TextPlugin(ModalityPlugin):
    name = "text"
    modality = common_pb2.MODALITY_TEXT
    model = "text_encoder"

    def has_input(self, request: encoder_pb2.EncodeRequest) -> bool:
        return bool(request.text.strip())

    def encode(self, request: encoder_pb2.EncodeRequest) -> Encoded:
        text, context = text_context.encoder_inputs(request.text, request.context_text, self.settings.max_text_chars)
        if not text:
            raise InvalidInput("text is empty")
        if len(text) > self.settings.max_text_chars:
            raise InvalidInput(f"text has {len(text)} characters; the limit is {self.settings.max_text_chars} (MERC_MAX_TEXT_CHARS)")
        out = self.inference.infer(self.model, {"TEXT": np.array([[text.encode()]], dtype=object),
                                                "CONTEXT": np.array([[context.encode()]], dtype=object)})
        vector = out["EMBEDDING"][0].astype(np.float32)
        return Encoded(vector, common_pb2.QualitySignals(text_length=quality.text_length(len(text))), self.model, self.inference.version(self.model))

    def warmup_request(self) -> encoder_pb2.EncodeRequest:
        return encoder_pb2.EncodeRequest(text="Warming up.", context_text="Hello.")


class AudioPlugin(ModalityPlugin):
    """Audio bytes -> 16 kHz mono -> quality signals + the voice encoder's embedding."""

    name = "audio"
    modality = common_pb2.MODALITY_AUDIO
    model = "audio_encoder"
    transcriber = "transcriber"

    def has_input(self, request: encoder_pb2.EncodeRequest) -> bool:
        return bool(request.audio.data)

    def encode(self, request: encoder_pb2.EncodeRequest) -> Encoded:
        wave = self._decode(request.audio)
        signals = quality.audio_signals(wave)
        out = self.inference.infer(self.model, {"WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64)})
        return Encoded(out["EMBEDDING"][0].astype(np.float32), common_pb2.QualitySignals(**signals), self.model,
                       self.inference.version(self.model))

    def transcribe(self, request: encoder_pb2.TranscribeRequest) -> encoder_pb2.TranscribeResponse:
        """The words of the request's audio (merc.models.transcriber, served as ``transcriber``); nothing is published."""
        language = request.language.strip()
        if language and language not in transcription.LANGUAGES:
            raise InvalidInput(f"unknown language {language!r}; an ISO 639-1 code Whisper knows, such as 'en', or empty to detect it")
        wave = self._decode(request.audio)
        out = self.inference.infer(self.transcriber, {
            "WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64),
            "LANGUAGE": np.array([[language.encode()]], dtype=object)})
        text, detected = (bytes(out[name][0][0]).decode("utf-8", errors="replace") for name in ("TEXT", "DETECTED_LANGUAGE"))
        return encoder_pb2.TranscribeResponse(text=text, language=detected,
                                              model=f"{self.transcriber}:{self.inference.version(self.transcriber)}")

    def _decode(self, a: encoder_pb2.Audio) -> np.ndarray:
        try:
            return media.decode_audio(a.data, a.encoding, a.sample_rate, a.channels, self.settings.max_audio_seconds)
        except media.MediaError as e:
            raise InvalidInput(str(e)) from None

    def warmup_request(self) -> encoder_pb2.EncodeRequest:
        hum = 0.1 * np.sin(2 * np.pi * 150 * np.arange(media.SAMPLE_RATE) / media.SAMPLE_RATE)
        return encoder_pb2.EncodeRequest(audio=encoder_pb2.Audio(data=hum.astype("<f4").tobytes(), encoding="pcm_f32le",
                                                                 sample_rate=media.SAMPLE_RATE, channels=1))


class VisionPlugin(ModalityPlugin):
    """Frames (faces detected) or face crops -> one expression embedding pooled over them.

    Frames are pooled weighted by detector confidence; crops an upstream tracker cut count as
    found with confidence 1. A request in which no face is found is rejected with that reason,
    so the utterance goes on without vision rather than with a made-up face.
    """

    name = "vision"
    modality = common_pb2.MODALITY_VISION
    model = "face_encoder"

    def has_input(self, request: encoder_pb2.EncodeRequest) -> bool:
        return bool(request.frames or request.faces)

    def encode(self, request: encoder_pb2.EncodeRequest) -> Encoded:
        n = len(request.frames) + len(request.faces)
        if n > self.settings.max_frames:
            raise InvalidInput(f"{n} images; the limit is {self.settings.max_frames} per utterance (MERC_MAX_FRAMES)")
        crops, scores = [], []
        try:
            for image in request.faces:
                crops.append(faces.resize(media.decode_image(image.data, self.settings.max_image_pixels)))
                scores.append(1.0)
            for image in request.frames:
                face = faces.detect(media.decode_image(image.data, self.settings.max_image_pixels))
                if face is not None:
                    crops.append(face.crop)
                    scores.append(face.score)
        except media.MediaError as e:
            raise InvalidInput(str(e)) from None
        if not crops:
            raise InvalidInput(f"no face found in {len(request.frames)} frame(s)")
        out = self.inference.infer(self.model, {"FACES": np.stack(crops)})
        w = np.asarray(scores, np.float32)
        # The embedding -> logits head is linear, so pooling embeddings pools the logits the same way.
        vector = (out["EMBEDDING"] * w[:, None]).sum(0) / w.sum()
        signals = common_pb2.QualitySignals(
            face_found_ratio=len(crops) / n, detector_score=float(w.mean()),
            sharpness=float(np.mean([quality.sharpness(c) for c in crops])))
        return Encoded(vector.astype(np.float32), signals, self.model, self.inference.version(self.model))

    def warmup_request(self) -> encoder_pb2.EncodeRequest:
        # A crop (the model) and a blank frame (the face detector loads; it finds nothing).
        def png(side: int) -> encoder_pb2.Image:
            return encoder_pb2.Image(data=cv2.imencode(".png", np.full((side, side), 128, np.uint8))[1].tobytes())

        return encoder_pb2.EncodeRequest(faces=[png(48)], frames=[png(96)])


PLUGINS: dict[str, type[ModalityPlugin]] = {"text": TextPlugin, "audio": AudioPlugin, "vision": VisionPlugin}


def plugin(name: str, inference: InferenceClient, settings) -> ModalityPlugin:
    try:
        return PLUGINS[name](inference, settings)
    except KeyError:
        raise ValueError(f"no encoder plug-in for modality {name!r}; available: {', '.join(PLUGINS)}") from None
