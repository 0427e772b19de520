"""`merc analyze --remote`: send a manifest through a running gateway, read the events back from Kafka.

Results come out in manifest order as soon as each is final (an error, or its event), so the
caller can write them as they come: a run stopped halfway keeps what it had.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from merc.analyze import manifest, segment
from merc.analyze.embedded import LineResult, unexpected
from merc.analyze.requests import NotInFile, attach_media, gateway_request
from merc.bus import Consumer, make_bus, topics
from merc.bus.base import ConsumerSpec
from merc.pipeline.modalities import InvalidInput
from merc.pipeline.text_context import ContextMemory
from merc.runtime import security
from merc.runtime.config import Settings, settings
from merc.v1 import events_pb2, gateway_pb2, gateway_pb2_grpc

Key = tuple[str, int]


def _request(u: manifest.Utterance, cfg: Settings, context_text: str) -> tuple[gateway_pb2.AnalyzeUtteranceRequest, list[str]]:
    """The request, and why any of the line's media was left out (as embedded mode reports it)."""
    req = gateway_request(u, cfg.tenant, context_text)
    errors = []
    for modality in ("audio", "vision"):
        if modality in u.given:
            try:
                attach_media(u, req, modality, cfg)
            except NotInFile:
                pass
            except InvalidInput as e:
                errors.append(f"line {u.line}: {modality}: {e}")
    return req, errors


def analyze_remote(path: str | Path, gateway: str, timeout_s: float = 60.0) -> Iterator[LineResult]:
    cfg = settings()
    bus = make_bus(cfg)
    # Subscribe before sending so no event can slip past.
    events = bus.consumer(ConsumerSpec([cfg.topic(topics.EMOTIONS)], group_id=None, from_beginning=False))
    try:
        events.poll(timeout_ms=0)
        stub = gateway_pb2_grpc.GatewayServiceStub(security.channel(gateway, cfg))
        yield from send(path, stub, events, cfg, timeout_s)
    finally:
        events.close()


def send(path: str | Path, stub, events: Consumer, cfg: Settings, timeout_s: float = 60.0) -> Iterator[LineResult]:
    """Each line through ``stub`` (the gateway), its event from ``events``; one result per line, in order."""
    auth = (("x-api-key", cfg.api_key),) if cfg.api_key else ()
    order: deque[tuple[LineResult, Key | None]] = deque()  # results not yet handed out
    waiting: dict[Key, LineResult] = {}  # sent, no event yet
    recent = ContextMemory()

    def done() -> Iterator[LineResult]:
        while order and (order[0][1] is None or order[0][1] not in waiting):
            yield order.popleft()[0]

    for item in segment.read(path, cfg.max_recording_seconds):
        if isinstance(item, manifest.ManifestError):
            order.append((LineResult(None, errors=[str(item)], line=item.line), None))
            yield from done()
            continue
        r, key = LineResult(item), (item.conversation, item.utterance)
        try:
            if key in waiting:  # the join keeps one result per utterance: the second line would get none
                r.errors.append(f"line {item.line}: utterance {item.utterance} of {item.conversation!r} is on line "
                                f"{waiting[key].utterance.line} already")
                key = None
            else:
                request, r.errors = _request(item, cfg, recent.next(item.conversation, item.speaker, item.text or ""))
                stub.AnalyzeUtterance(request, timeout=30, metadata=auth)
                waiting[key] = r
        except grpc.RpcError as e:
            r.errors.append(f"line {item.line}: {e.code().name}: {e.details()}")
            key = None
        except Exception as e:  # a bug one line trips must not cost the lines after it
            r, key = unexpected(item, e), None
        order.append((r, key))
        _take(events.poll(timeout_ms=0), waiting)
        yield from done()
    deadline = time.monotonic() + timeout_s
    quiet_s = cfg.join_window_ms / 1000 + 5
    last = time.monotonic()
    while waiting and time.monotonic() < min(deadline, last + quiet_s):
        if _take(events.poll(timeout_ms=200), waiting):
            last = time.monotonic()
        yield from done()
    if waiting:
        _from_store(stub, cfg.tenant, waiting, auth)
    yield from (r for r, _ in order)


def _take(messages, waiting: dict[Key, LineResult]) -> bool:
    """Give the waiting lines their events; whether any arrived."""
    arrived = False
    for m in messages:
        if m.value is None:  # an erasure tombstone
            continue
        try:
            e = events_pb2.EmotionEvent.FromString(m.value)
        except DecodeError:  # not ours to judge: some other writer's record on the topic
            continue
        r = waiting.pop((e.utterance.conversation_id, e.utterance.sequence), None)
        if r is not None:
            r.event = e
            arrived = True
    return arrived


def _from_store(stub, tenant: str, waiting: dict[Key, LineResult], auth=()) -> None:
    """Utterances already analysed earlier produce no new event (the join drops duplicates):
    take their stored result instead, and say so."""
    for conversation in sorted({c for c, _ in waiting}):
        try:
            # With an API key the key decides the tenant; without one, MERC_TENANT.
            request = gateway_pb2.GetConversationRequest(tenant="" if auth else tenant, conversation_id=conversation)
            stored = stub.GetConversation(request, timeout=10, metadata=auth)
        except grpc.RpcError:
            continue
        for e in stored.events:
            r = waiting.pop((conversation, e.utterance.sequence), None)
            if r is not None:
                r.event = e
                r.notes.append("no new event: this utterance was analysed before; showing the stored result")
    for r in waiting.values():
        r.errors.append(f"line {r.utterance.line}: no event arrived (is the fusion service running?)")
    waiting.clear()
