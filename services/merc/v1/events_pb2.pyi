from merc.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModalityEmbedding(_message.Message):
    __slots__ = ("utterance", "modality", "vector", "quality", "expected_modalities", "encoder_model", "encoder_version", "sent_at_ms")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MODEL_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    modality: _common_pb2.Modality
    vector: _containers.RepeatedScalarFieldContainer[float]
    quality: _common_pb2.QualitySignals
    expected_modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    encoder_model: str
    encoder_version: str
    sent_at_ms: int
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., vector: _Optional[_Iterable[float]] = ..., quality: _Optional[_Union[_common_pb2.QualitySignals, _Mapping]] = ..., expected_modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., encoder_model: _Optional[str] = ..., encoder_version: _Optional[str] = ..., sent_at_ms: _Optional[int] = ...) -> None: ...

class SpeakerMood(_message.Message):
    __slots__ = ("speaker", "probabilities", "valence", "arousal", "emotion_shifts", "utterances")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    VALENCE_FIELD_NUMBER: _ClassVar[int]
    AROUSAL_FIELD_NUMBER: _ClassVar[int]
    EMOTION_SHIFTS_FIELD_NUMBER: _ClassVar[int]
    UTTERANCES_FIELD_NUMBER: _ClassVar[int]
    speaker: str
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    valence: float
    arousal: float
    emotion_shifts: int
    utterances: int
    def __init__(self, speaker: _Optional[str] = ..., probabilities: _Optional[_Iterable[float]] = ..., valence: _Optional[float] = ..., arousal: _Optional[float] = ..., emotion_shifts: _Optional[int] = ..., utterances: _Optional[int] = ...) -> None: ...

class EmotionEvent(_message.Message):
    __slots__ = ("event_id", "utterance", "probabilities", "label", "confidence", "prediction_set", "prediction_set_coverage", "sentiment_probabilities", "sentiment", "modalities", "modality_weights", "degraded", "missing_modalities", "revision", "model_version", "latency_ms", "emitted_at_ms", "conversation_mood", "speaker_mood", "incongruence", "modality_posteriors", "text_shift")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_SET_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_SET_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MODALITY_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    MISSING_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_MOOD_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_MOOD_FIELD_NUMBER: _ClassVar[int]
    INCONGRUENCE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_POSTERIORS_FIELD_NUMBER: _ClassVar[int]
    TEXT_SHIFT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    utterance: _common_pb2.UtteranceRef
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    label: str
    confidence: float
    prediction_set: _containers.RepeatedScalarFieldContainer[str]
    prediction_set_coverage: float
    sentiment_probabilities: _containers.RepeatedScalarFieldContainer[float]
    sentiment: str
    modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    modality_weights: _containers.RepeatedScalarFieldContainer[float]
    degraded: bool
    missing_modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    revision: int
    model_version: str
    latency_ms: int
    emitted_at_ms: int
    conversation_mood: SpeakerMood
    speaker_mood: SpeakerMood
    incongruence: float
    modality_posteriors: _containers.RepeatedCompositeFieldContainer[ModalityPosterior]
    text_shift: float
    def __init__(self, event_id: _Optional[str] = ..., utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., probabilities: _Optional[_Iterable[float]] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., prediction_set: _Optional[_Iterable[str]] = ..., prediction_set_coverage: _Optional[float] = ..., sentiment_probabilities: _Optional[_Iterable[float]] = ..., sentiment: _Optional[str] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., modality_weights: _Optional[_Iterable[float]] = ..., degraded: _Optional[bool] = ..., missing_modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., revision: _Optional[int] = ..., model_version: _Optional[str] = ..., latency_ms: _Optional[int] = ..., emitted_at_ms: _Optional[int] = ..., conversation_mood: _Optional[_Union[SpeakerMood, _Mapping]] = ..., speaker_mood: _Optional[_Union[SpeakerMood, _Mapping]] = ..., incongruence: _Optional[float] = ..., modality_posteriors: _Optional[_Iterable[_Union[ModalityPosterior, _Mapping]]] = ..., text_shift: _Optional[float] = ...) -> None: ...

class ModalityPosterior(_message.Message):
    __slots__ = ("modality", "probabilities")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...
