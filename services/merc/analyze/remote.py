"""`merc analyze --remote`: send a manifest through a running gateway, read the events back from Kafka."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc

from merc.analyze import manifest, segment
from merc.analyze.embedded import LineResult
from merc.analyze.requests import NotInFile, attach_media, gateway_request
from merc.bus import make_bus, topics
from merc.bus.base import ConsumerSpec
from merc.pipeline.modalities import InvalidInput
from merc.pipeline.text_context import ContextMemory
from merc.runtime import security
from merc.runtime.config import Settings, settings
from merc.v1 import events_pb2, gateway_pb2, gateway_pb2_grpc


def _request(u: manifest.Utterance, cfg: Settings, context_text: str) -> tuple[gateway_pb2.AnalyzeUtteranceRequest, list[str]]:
    """The request, and why any of the line's media was left out (as embedded mode reports it)."""
    req = gateway_request(u, cfg.tenant, context_text)
    errors = []
    for modality in ("audio", "vision"):
        if modality in u.given:
            try:
                attach_media(u, req, modality, cfg.video_frames, cfg.max_image_pixels)
            except NotInFile:
                pass
            except InvalidInput as e:
                errors.append(f"line {u.line}: {modality}: {e}")
    return req, errors


def analyze_remote(path: str | Path, gateway: str, timeout_s: float = 60.0) -> list[dict]:
    cfg = settings()
    bus = make_bus(cfg)
    # Subscribe before sending so no event can slip past.
    events = bus.consumer(ConsumerSpec([cfg.topic(topics.EMOTIONS)], group_id=None, from_beginning=False))
    events.poll(timeout_ms=0)
    stub = gateway_pb2_grpc.GatewayServiceStub(security.channel(gateway, cfg))
    auth = (("x-api-key", cfg.api_key),) if cfg.api_key else ()
    results: dict[tuple[str, int], LineResult] = {}
    order: list[LineResult] = []
    recent = ContextMemory()
    for item in segment.read(path):
        if isinstance(item, manifest.ManifestError):
            order.append(LineResult(None, errors=[str(item)], line=item.line))
            print(f"merc analyze: {path}: {item}", file=sys.stderr)
            continue
        r = LineResult(item)
        order.append(r)
        try:
            request, r.errors = _request(item, cfg, recent.next(item.conversation, item.speaker, item.text or ""))
            for err in r.errors:
                print(f"merc analyze: {path}: {err}", file=sys.stderr)
            stub.AnalyzeUtterance(request, timeout=30, metadata=auth)
            results[(item.conversation, item.utterance)] = r
        except grpc.RpcError as e:
            r.errors.append(f"line {item.line}: {e.code().name}: {e.details()}")
            print(f"merc analyze: {path}: {r.errors[-1]}", file=sys.stderr)
    deadline = time.monotonic() + timeout_s
    quiet_s = cfg.join_window_ms / 1000 + 5
    last = time.monotonic()
    waiting = set(results)
    while waiting and time.monotonic() < min(deadline, last + quiet_s):
        for m in events.poll(timeout_ms=200):
            if m.value is None:  # an erasure tombstone
                continue
            e = events_pb2.EmotionEvent.FromString(m.value)
            key = (e.utterance.conversation_id, e.utterance.sequence)
            if key in results:
                results[key].event = e
                waiting.discard(key)
                last = time.monotonic()
    events.close()
    if waiting:
        _from_store(stub, cfg.tenant, results, waiting, auth)
    return [r.to_json() for r in order]


def _from_store(stub, tenant: str, results: dict, waiting: set, auth=()) -> None:
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
            key = (conversation, e.utterance.sequence)
            if key in waiting:
                results[key].event = e
                results[key].notes.append("no new event: this utterance was analysed before; showing the stored result")
                waiting.discard(key)
    for key in waiting:
        results[key].errors.append("no event arrived (is the fusion service running?)")
