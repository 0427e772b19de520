from merc.v1 import common_pb2 as _common_pb2
from merc.v1 import encoder_pb2 as _encoder_pb2
from merc.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeUtteranceRequest(_message.Message):
    __slots__ = ("utterance", "text", "audio", "frames", "faces", "context_text")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TEXT_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    text: str
    audio: _encoder_pb2.Audio
    frames: _containers.RepeatedCompositeFieldContainer[_encoder_pb2.Image]
    faces: _containers.RepeatedCompositeFieldContainer[_encoder_pb2.Image]
    context_text: str
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., text: _Optional[str] = ..., audio: _Optional[_Union[_encoder_pb2.Audio, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[_encoder_pb2.Image, _Mapping]]] = ..., faces: _Optional[_Iterable[_Union[_encoder_pb2.Image, _Mapping]]] = ..., context_text: _Optional[str] = ...) -> None: ...

class AnalyzeUtteranceResponse(_message.Message):
    __slots__ = ("utterance", "modalities", "errors", "transcript")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    modalities: _containers.RepeatedScalarFieldContainer[_common_pb2.Modality]
    errors: _containers.RepeatedCompositeFieldContainer[ModalityError]
    transcript: str
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.Modality, str]]] = ..., errors: _Optional[_Iterable[_Union[ModalityError, _Mapping]]] = ..., transcript: _Optional[str] = ...) -> None: ...

class ModalityError(_message.Message):
    __slots__ = ("modality", "reason")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    reason: str
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamConversationRequest(_message.Message):
    __slots__ = ("utterance", "send_transcripts")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    SEND_TRANSCRIPTS_FIELD_NUMBER: _ClassVar[int]
    utterance: AnalyzeUtteranceRequest
    send_transcripts: bool
    def __init__(self, utterance: _Optional[_Union[AnalyzeUtteranceRequest, _Mapping]] = ..., send_transcripts: _Optional[bool] = ...) -> None: ...

class StreamConversationResponse(_message.Message):
    __slots__ = ("event", "rejected", "transcribed")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIBED_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.EmotionEvent
    rejected: Rejected
    transcribed: Transcribed
    def __init__(self, event: _Optional[_Union[_events_pb2.EmotionEvent, _Mapping]] = ..., rejected: _Optional[_Union[Rejected, _Mapping]] = ..., transcribed: _Optional[_Union[Transcribed, _Mapping]] = ...) -> None: ...

class Transcribed(_message.Message):
    __slots__ = ("utterance", "transcript")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    transcript: str
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., transcript: _Optional[str] = ...) -> None: ...

class Rejected(_message.Message):
    __slots__ = ("utterance", "code", "errors", "reason")
    UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    utterance: _common_pb2.UtteranceRef
    code: str
    errors: _containers.RepeatedCompositeFieldContainer[ModalityError]
    reason: str
    def __init__(self, utterance: _Optional[_Union[_common_pb2.UtteranceRef, _Mapping]] = ..., code: _Optional[str] = ..., errors: _Optional[_Iterable[_Union[ModalityError, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("tenant", "conversation_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class EraseConversationRequest(_message.Message):
    __slots__ = ("tenant", "conversation_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    conversation_id: str
    def __init__(self, tenant: _Optional[str] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class EraseConversationResponse(_message.Message):
    __slots__ = ("utterances_deleted",)
    UTTERANCES_DELETED_FIELD_NUMBER: _ClassVar[int]
    utterances_deleted: int
    def __init__(self, utterances_deleted: _Optional[int] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation_id", "events")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.EmotionEvent]
    def __init__(self, conversation_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_events_pb2.EmotionEvent, _Mapping]]] = ...) -> None: ...
