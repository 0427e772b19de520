from merc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Audio(_message.Message):
    __slots__ = ("data", "encoding", "sample_rate", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    encoding: str
    sample_rate: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., encoding: _Optional[str] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("utterance", "text", "audio", "frames", "faces", "expected_modalities", "sent_at_ms", "context_text")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TEXT_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    text: str
    audio: Audio
    frames: _containers.RepeatedCompositeFieldContainer[Image]
    faces: _containers.RepeatedCompositeFieldContainer[Image]
    expected_modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    sent_at_ms: int
    context_text: str
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., text: _Optional[str] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., faces: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., expected_modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., sent_at_ms: _Optional[int] = ..., context_text: _Optional[str] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("modality", "dimensions", "quality", "encoder_model")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MODEL_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    dimensions: int
    quality: _common_pb2.QualitySignals
    encoder_model: str
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., dimensions: _Optional[int] = ..., quality: _Optional[_Union[_common_pb2.QualitySignals, _Mapping]] = ..., encoder_model: _Optional[str] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("audio", "language")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    audio: Audio
    language: str
    def __init__(self, audio: _Optional[_Union[Audio, _Mapping]] = ..., language: _Optional[str] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("text", "language", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    model: str
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...
