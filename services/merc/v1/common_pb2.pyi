from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]
    MODALITY_VISION: _ClassVar[Modality]
MODALITY_UNSPECIFIED: Modality
MODALITY_TEXT: Modality
MODALITY_AUDIO: Modality
MODALITY_VISION: Modality

class UtteranceRef(_message.Message):
    __slots__ = ("tenant", "conversation_id", "sequence", "speaker", "start_ms", "end_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    sequence: int
    speaker: str
    start_ms: int
    end_ms: int
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ..., sequence: _Optional[int] = ..., speaker: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...

class QualitySignals(_message.Message):
    __slots__ = ("text_length", "voiced_ratio", "snr_db", "clipping_ratio", "face_found_ratio", "detector_score", "sharpness")
    TEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOICED_RATIO_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    CLIPPING_RATIO_FIELD_NUMBER: _ClassVar[int]
    FACE_FOUND_RATIO_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    text_length: int
    voiced_ratio: float
    snr_db: float
    clipping_ratio: float
    face_found_ratio: float
    detector_score: float
    sharpness: float
    def __init__(self, text_length: _Optional[int] = ..., voiced_ratio: _Optional[float] = ..., snr_db: _Optional[float] = ..., clipping_ratio: _Optional[float] = ..., face_found_ratio: _Optional[float] = ..., detector_score: _Optional[float] = ..., sharpness: _Optional[float] = ...) -> None: ...
