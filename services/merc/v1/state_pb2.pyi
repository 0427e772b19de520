from merc.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConversationJoinState(_message.Message):
    __slots__ = ("entries", "updated_at_ms")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[JoinEntry]
    updated_at_ms: int
    def __init__(self, entries: _Optional[_Iterable[_Union[JoinEntry, _Mapping]]] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class JoinEntry(_message.Message):
    __slots__ = ("embeddings", "first_arrival_ms", "emitted", "revision")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ARRIVAL_MS_FIELD_NUMBER: _ClassVar[int]
    EMITTED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[_events_pb2.ModalityEmbedding]
    first_arrival_ms: int
    emitted: bool
    revision: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[_events_pb2.ModalityEmbedding, _Mapping]]] = ..., first_arrival_ms: _Optional[int] = ..., emitted: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...
