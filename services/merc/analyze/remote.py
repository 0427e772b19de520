"""`merc analyze --remote`: a manifest through a running gateway's StreamConversation.

Only the gateway's address is needed: the utterances go up the stream and their events (or the
reasons they got none) come back down it. Results come out in manifest order as soon as each is
final, so the caller can write them as they come: a run stopped halfway keeps what it had.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import grpc

from merc.analyze import manifest, segment
from merc.analyze.embedded import STORED_NOTE, LineResult, repeated, unexpected
from merc.analyze.requests import NotInFile, attach_media, gateway_request
from merc.pipeline.modalities import InvalidInput
from merc.pipeline.text_context import ContextMemory
from merc.runtime import security
from merc.runtime.config import Settings, settings
from merc.v1 import gateway_pb2, gateway_pb2_grpc

Key = tuple[str, int]

# Utterances sent but without their event yet: well under the gateway's MERC_MAX_STREAM_PENDING
# (256 by default), past which it would refuse them; the next line waits for a slot instead.
IN_FLIGHT = 64

# Stream-level failures that mean "not reachable now" (exit status 3) rather than a refusal.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})


class GatewayError(RuntimeError):
    """The stream failed before any utterance got an answer: nothing was analysed."""

    def __init__(self, gateway: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"the gateway at {gateway}: {code.name}: {details}")
        self.code = code

    @property
    def unreachable(self) -> bool:
        return self.code in UNREACHABLE


def remote_settings(api_key: str | None = None) -> Settings:
    cfg = settings()
    return cfg.model_copy(update={"api_key": api_key}) if api_key else cfg


def _request(u: manifest.Utterance, cfg: Settings, context_text: str) -> tuple[gateway_pb2.AnalyzeUtteranceRequest, list[str]]:
    """The request, and why any of the line's media was left out (as embedded mode reports it)."""
    # With an API key the key names the tenant (the gateway fills it in); without one, MERC_TENANT.
    req = gateway_request(u, "" if cfg.api_key else cfg.tenant, context_text)
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


def analyze_remote(path: str | Path, gateway: str, timeout_s: float = 60.0, cfg: Settings | None = None,
                   base: Path | None = None, speakers: int | None = None) -> Iterator[LineResult]:
    cfg = cfg or settings()
    channel = security.channel(gateway, cfg)
    try:
        yield from send(path, gateway_pb2_grpc.GatewayServiceStub(channel), cfg, timeout_s, base=base, gateway=gateway,
                        speakers=speakers)
    finally:
        channel.close()


class _Run:
    """The lines of one run: the request side (grpc's thread) adds them, the response side settles them."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.order: deque[tuple[LineResult, Key | None]] = deque()  # not handed out yet
        self.waiting: dict[Key, LineResult] = {}  # sent, no answer yet
        self.lines: dict[Key, int] = {}  # every utterance sent, by the line that sent it
        self.wake: queue.Queue = queue.Queue()  # responses, and None when a line was added
        self.requests_done = threading.Event()
        self.stopped = threading.Event()

    def add(self, r: LineResult, key: Key | None) -> None:
        with self.lock:
            self.order.append((r, key))
            if key is not None:
                self.waiting[key] = r
                self.lines[key] = r.utterance.line
        self.wake.put(None)

    def final(self) -> list[LineResult]:
        """Results at the head of the manifest whose outcome is known."""
        out = []
        with self.lock:
            while self.order and (self.order[0][1] is None or self.order[0][1] not in self.waiting):
                out.append(self.order.popleft()[0])
        return out

    def settle(self, key: Key, event=None, error: str | None = None) -> None:
        with self.lock:
            r = self.waiting.pop(key, None)
            self.lock.notify_all()  # a slot freed for the request side
        if r is not None:
            if event is not None:
                r.event = event
            if error:
                r.errors.append(f"line {r.utterance.line}: {error}")


def send(path: str | Path, stub, cfg: Settings, timeout_s: float = 60.0, base: Path | None = None,
         gateway: str = "the gateway", speakers: int | None = None) -> Iterator[LineResult]:
    """Each line up ``stub.StreamConversation``, its event down it; one result per line, in order."""
    auth = (("x-api-key", cfg.api_key),) if cfg.api_key else ()
    run = _Run()

    def requests() -> Iterator[gateway_pb2.StreamConversationRequest]:
        recent = ContextMemory()
        try:
            for item in segment.read(path, cfg.max_recording_seconds, base=base, speakers=speakers):
                if run.stopped.is_set():
                    return
                if isinstance(item, manifest.ManifestError):
                    run.add(LineResult(None, errors=[str(item)], line=item.line), None)
                    continue
                r, key = LineResult(item), (item.conversation, item.utterance)
                if key in run.lines:
                    r.errors.append(repeated(item, run.lines[key]))
                    run.add(r, None)
                    continue
                try:
                    request, r.errors = _request(item, cfg, recent.next(item.conversation, item.speaker, item.text or ""))
                except Exception as e:  # a bug one line trips must not cost the lines after it
                    run.add(unexpected(item, e), None)
                    continue
                with run.lock:
                    while len(run.waiting) >= IN_FLIGHT and not run.stopped.is_set():
                        run.lock.wait(0.5)
                run.add(r, key)
                yield gateway_pb2.StreamConversationRequest(utterance=request)
        finally:
            run.requests_done.set()
            run.wake.put(None)

    call = stub.StreamConversation(requests(), metadata=auth)

    def read_responses() -> None:
        try:
            for response in call:
                run.wake.put(response)
            run.wake.put(StopIteration())
        except grpc.RpcError as e:
            run.wake.put(e)

    threading.Thread(target=read_responses, daemon=True, name="merc-remote-responses").start()
    answered = False
    last = time.monotonic()
    try:
        while True:
            try:
                item = run.wake.get(timeout=0.2)
            except queue.Empty:
                item = None
            if isinstance(item, gateway_pb2.StreamConversationResponse):
                answered, last = True, time.monotonic()
                _settle(run, item)
            elif isinstance(item, grpc.RpcError):
                if not answered:
                    raise GatewayError(gateway, item.code(), item.details())
                if item.code() != grpc.StatusCode.CANCELLED:
                    for key in list(run.waiting):
                        run.settle(key, error=f"the stream ended before its event: {item.code().name}: {item.details()}")
                break
            elif isinstance(item, StopIteration):
                break
            yield from run.final()
            if run.requests_done.is_set() and time.monotonic() - last > timeout_s:
                call.cancel()  # the events are late; what is still waiting is settled below
                break
    finally:
        run.stopped.set()
        if not run.requests_done.is_set():
            call.cancel()
    if run.waiting:
        _from_store(stub, cfg.tenant, run, auth)
    yield from run.final()


def _settle(run: _Run, response: gateway_pb2.StreamConversationResponse) -> None:
    if response.HasField("event"):
        u = response.event.utterance
        run.settle((u.conversation_id, u.sequence), event=response.event)
        return
    if not response.HasField("rejected"):
        return  # another kind of item (a transcript, which this client does not ask for): nothing to settle
    rejected = response.rejected
    if rejected.code == grpc.StatusCode.ALREADY_EXISTS.name:
        return  # analysed before: still waiting, it takes its stored result (_from_store) once the stream ends
    reasons = "; ".join(e.reason for e in rejected.errors) or rejected.reason
    run.settle((rejected.utterance.conversation_id, rejected.utterance.sequence), error=f"{rejected.code}: {reasons}")


def _from_store(stub, tenant: str, run: _Run, auth=()) -> None:
    """Utterances already analysed earlier produce no new event (the join drops duplicates):
    take their stored result instead, and say so."""
    for conversation in sorted({c for c, _ in run.waiting}):
        try:
            # With an API key the key decides the tenant; without one, MERC_TENANT.
            request = gateway_pb2.GetConversationRequest(tenant="" if auth else tenant, conversation_id=conversation)
            stored = stub.GetConversation(request, timeout=10, metadata=auth)
        except grpc.RpcError:
            continue
        for e in stored.events:
            key = (conversation, e.utterance.sequence)
            with run.lock:
                r = run.waiting.get(key)
            if r is not None:
                r.notes.append(STORED_NOTE)
                run.settle(key, event=e)
    for key in list(run.waiting):
        run.settle(key, error="no event arrived (is the fusion service running?)")
