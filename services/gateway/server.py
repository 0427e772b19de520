"""GatewayService: AnalyzeUtterance, StreamConversation, GetConversation, EraseConversation.

Every call acts for the tenant of its API key (merc.runtime.security): requests naming another tenant are
refused, reads and erasure are scoped to it.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from concurrent import futures

import grpc

from merc.bus import DeliveryFailed, Producer
from merc.gateway.hub import EventHub, Inbox
from merc.gateway.limits import StreamSlots, oversized, streams_per_tenant
from merc.pipeline import resend
from merc.pipeline.events import to_event
from merc.pipeline.join import MODALITY_ENUMS
from merc.pipeline.text_context import ContextMemory, collapse_spaces
from merc.runtime import privacy, security, telemetry
from merc.runtime.config import Settings
from merc.runtime.errors import public_message
from merc.store import Store, StoreUnavailable
from merc.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
)

log = logging.getLogger(__name__)


def given_modalities(request: gateway_pb2.AnalyzeUtteranceRequest) -> list[str]:
    given = []
    if request.text.strip():
        given.append("text")
    if request.HasField("audio") and request.audio.data:
        given.append("audio")
    if request.frames or request.faces:
        given.append("vision")
    return given


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        encoders: dict[str, encoder_pb2_grpc.EncoderServiceStub],
        store: Store,
        hub: EventHub | None,
        tenant: str,
        timeout_s: float = 30.0,
        stream_idle_s: float = 30.0,
        producer: Producer | None = None,
        settings: Settings | None = None,
        max_streams: int | None = None,
        max_streams_per_tenant: int | None = None,
    ) -> None:
        """``producer`` is needed for EraseConversation only; ``settings`` (topic names, limits) default to
        Settings' defaults, and ``max_streams``/``max_streams_per_tenant`` to theirs (merc.gateway.limits)."""
        self.encoders = encoders
        self.store = store
        self.hub = hub
        self.stream_idle_s = stream_idle_s
        self.tenant = tenant
        self.timeout_s = timeout_s
        self.producer = producer
        self.settings = settings if settings is not None else Settings()
        self.slots = StreamSlots(max_streams or self.settings.max_streams, max_streams_per_tenant or streams_per_tenant(self.settings))
        # The fan-out threads run in the caller's context (trace, tenant): pool threads don't inherit it.
        self._pool = telemetry.carry_context(futures.ThreadPoolExecutor(max_workers=16))

    def AnalyzeUtterance(self, request: gateway_pb2.AnalyzeUtteranceRequest, context: grpc.ServicerContext) -> gateway_pb2.AnalyzeUtteranceResponse:
        transcript, problem = self._transcribe(request)
        response, error = self._analyze(request, problem)
        if error is not None:
            context.abort(*error)
        response.transcript = transcript
        return response

    def StreamConversation(self, requests, context: grpc.ServicerContext):
        """Push utterances, receive each one's event (and revisions) as the fusion service emits it.

        The stream ends when the client has closed its side and every accepted
        utterance's event has arrived, or after stream_idle_s without an event.
        """
        if self.hub is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this gateway has no event stream configured")
        tenant = security.tenant(self.tenant)
        refused = self.slots.acquire(tenant)
        if refused:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        try:
            yield from self._stream(requests, context)
        finally:
            self.slots.release(tenant)

    def _stream(self, requests, context: grpc.ServicerContext):
        stream = _Stream(self)
        # The caller's tenant and key live in context variables: carry them into the reader thread.
        threading.Thread(target=contextvars.copy_context().run, args=(stream.consume, requests), daemon=True).start()
        try:
            yield from stream.responses(context)
        finally:
            stream.close()
        if stream.merged.overflowed:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "this stream's events were not read as fast as they came; "
                          "read the conversation with GetConversation and open a new stream")

    def _transcribe(self, request: gateway_pb2.AnalyzeUtteranceRequest) -> tuple[str, str]:
        """With MERC_TRANSCRIBE_AUDIO on, an utterance with audio and no text gets its audio's words as text.

        Runs before the utterance is remembered as context (streams) or fanned out, so the transcript takes
        the path a client's own text would. Returns (transcript, problem): the words, now the request's
        text, or why it has none; both empty when there was nothing to transcribe. A transcript is never
        logged: it goes to the text encoder, the stream's memory and this caller.
        """
        if not (self.settings.transcribe_audio and "audio" in given_modalities(request) and not request.text.strip()):
            return "", ""
        if not request.utterance.conversation_id or "audio" in oversized(request, self.settings):
            return "", ""  # _analyze refuses it, with the reason
        try:
            security.check_tenant(request.utterance.tenant, self.tenant)
        except PermissionError:
            return "", ""  # as above
        stub = self.encoders.get("audio")
        if stub is None:
            return "", "not transcribed: no audio encoder is configured"
        try:
            reply = stub.Transcribe(encoder_pb2.TranscribeRequest(audio=request.audio, language=self.settings.transcription_language),
                                    timeout=self.timeout_s, metadata=security.forwarded_metadata())
        except grpc.RpcError as e:
            log.warning("an utterance was not transcribed: %s", e.code().name)
            return "", public_message(f"not transcribed: {e.details() or e.code().name}")
        if not reply.text.strip():
            return "", "transcribed: no words were heard"
        request.text = reply.text
        return reply.text, ""

    def _analyze(self, request: gateway_pb2.AnalyzeUtteranceRequest,
                 transcription_problem: str = "") -> tuple[gateway_pb2.AnalyzeUtteranceResponse, tuple | None]:
        """Fan one utterance out to the encoders; (response, None) or (partial response, (code, message)).

        ``transcription_problem`` (from _transcribe) is reported as the text modality's error."""
        if not request.utterance.conversation_id:
            return gateway_pb2.AnalyzeUtteranceResponse(), (grpc.StatusCode.INVALID_ARGUMENT, "utterance.conversation_id is required")
        given = given_modalities(request)
        if not given:
            return gateway_pb2.AnalyzeUtteranceResponse(), (grpc.StatusCode.INVALID_ARGUMENT, "the utterance carries no text, audio, frames or faces")
        # Refused here, before it is copied into a request per encoder; like a modality an encoder
        # refuses, the others go on (and the event says what is missing).
        refused = oversized(request, self.settings)
        if refused and set(refused) >= set(given):
            return gateway_pb2.AnalyzeUtteranceResponse(), (grpc.StatusCode.INVALID_ARGUMENT, "; ".join(refused.values()))
        try:
            tenant = security.check_tenant(request.utterance.tenant, self.tenant)
        except PermissionError as e:
            return gateway_pb2.AnalyzeUtteranceResponse(), (grpc.StatusCode.PERMISSION_DENIED, public_message(e))
        ref = common_pb2.UtteranceRef()
        ref.CopyFrom(request.utterance)
        ref.tenant = tenant
        stored = self._stored(ref)
        if resend.nothing_new(stored, given):
            return gateway_pb2.AnalyzeUtteranceResponse(utterance=ref), (grpc.StatusCode.ALREADY_EXISTS, resend.refusal(stored))
        common = {"utterance": ref, "expected_modalities": [MODALITY_ENUMS[m] for m in given], "sent_at_ms": int(time.time() * 1000)}
        # Each encoder gets its own inputs only: a request's frames are not sent to the text encoder too.
        inputs = {"text": {"text": request.text, "context_text": request.context_text},
                  "audio": {"audio": request.audio if request.HasField("audio") else None},
                  "vision": {"frames": request.frames, "faces": request.faces}}
        metadata = security.forwarded_metadata()  # the encoders check the caller's key too
        calls = {m: self._pool.submit(self._encode, m, encoder_pb2.EncodeRequest(**common, **inputs[m]), metadata)
                 for m in given if m not in refused}
        response = gateway_pb2.AnalyzeUtteranceResponse(utterance=ref)
        if transcription_problem:
            response.errors.add(modality=common_pb2.MODALITY_TEXT, reason=transcription_problem)
        failures = []
        for m, reason in refused.items():
            failures.append(grpc.StatusCode.INVALID_ARGUMENT)
            response.errors.add(modality=MODALITY_ENUMS[m], reason=reason)
        for m, call in calls.items():
            error = call.result()
            if error is None:
                response.modalities.append(MODALITY_ENUMS[m])
            else:
                code, reason = error
                failures.append(code)
                response.errors.add(modality=MODALITY_ENUMS[m], reason=reason)
        if not response.modalities:
            # Nothing was published: fail the call with the most telling status. An encoder whose
            # record the broker did not accept answered UNAVAILABLE, and so does this call: retry.
            code = grpc.StatusCode.INVALID_ARGUMENT if grpc.StatusCode.INVALID_ARGUMENT in failures else grpc.StatusCode.UNAVAILABLE
            return response, (code, public_message("; ".join(f"{common_pb2.Modality.Name(e.modality)}: {e.reason}" for e in response.errors)))
        return response, None

    def _stored(self, ref: common_pb2.UtteranceRef):
        """The utterance's stored result (merc.pipeline.resend), or None; None too while the store is down:
        the check fails open, since fusion's join still drops a second copy of what it holds."""
        try:
            return self.store.analysed(ref.tenant, ref.conversation_id, ref.sequence)
        except StoreUnavailable as e:
            log.warning("re-send check skipped, the store is unavailable: %s", e)
            return None

    def _encode(self, modality: str, request: encoder_pb2.EncodeRequest, metadata=()) -> tuple[grpc.StatusCode, str] | None:
        stub = self.encoders.get(modality)
        if stub is None:
            return grpc.StatusCode.UNAVAILABLE, f"no {modality} encoder is configured"
        try:
            stub.Encode(request, timeout=self.timeout_s, metadata=metadata)
            return None
        except grpc.RpcError as e:
            return e.code(), public_message(e.details() or e.code().name)

    def GetConversation(self, request: gateway_pb2.GetConversationRequest, context: grpc.ServicerContext) -> gateway_pb2.GetConversationResponse:
        if not request.conversation_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required")
        tenant = self._tenant(request.tenant, context)
        rows = self.store.conversation(tenant, request.conversation_id)
        if not rows:
            # The same answer whether the conversation is another tenant's or nobody's.
            context.abort(grpc.StatusCode.NOT_FOUND, f"no conversation {request.conversation_id!r}")
        return gateway_pb2.GetConversationResponse(conversation_id=request.conversation_id, events=[to_event(r) for r in rows])

    def EraseConversation(self, request: gateway_pb2.EraseConversationRequest, context: grpc.ServicerContext) -> gateway_pb2.EraseConversationResponse:
        if not request.conversation_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "conversation_id is required")
        if self.producer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this gateway has no bus to publish tombstones on")
        tenant = self._tenant(request.tenant, context)
        try:
            deleted = privacy.erase(self.store, self.producer, self.settings, tenant, request.conversation_id)
        except DeliveryFailed as e:
            # Tombstones go first and the rows are deleted only once the broker has them all: nothing
            # is erased yet, and erasing again is safe.
            log.warning("erasure not done, tombstones not published: %s", e)
            context.abort(grpc.StatusCode.UNAVAILABLE, public_message(f"the erasure tombstones were not published, nothing was erased; retry: {e}"))
        log.info("erased a conversation of tenant %s: %d stored results", tenant, deleted)
        return gateway_pb2.EraseConversationResponse(utterances_deleted=deleted)

    def _tenant(self, requested: str, context: grpc.ServicerContext) -> str:
        try:
            return security.check_tenant(requested, self.tenant)
        except PermissionError as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, public_message(e))


class _Stream:
    """One StreamConversation: a reader thread sends utterances, the call's thread yields their events.

    Events come from the hub for every conversation the stream has sent to; rejections from the
    reader. The stream is done once the client closed its side and every accepted utterance has
    its event, or after ``stream_idle_s`` without one.
    """

    def __init__(self, gateway: GatewayServicer) -> None:
        self.gateway = gateway
        self.watched: set[tuple[str, str]] = set()
        self.waiting: set[tuple[str, str, int]] = set()
        self.lock = threading.Lock()
        # EmotionEvents from the hub, Rejected from the reader; bounded: a client that stops reading
        # blocks its own reader and, once the hub's events no longer fit, loses the stream.
        self.merged = Inbox()
        self.requests_done = threading.Event()
        self.closed = threading.Event()
        self.recent = ContextMemory()  # this stream's memory only; dropped with it
        self.send_transcripts = False

    def consume(self, requests) -> None:
        try:
            for req in requests:
                self.send_transcripts = self.send_transcripts or req.send_transcripts
                self._send(req.utterance)
        finally:
            self.requests_done.set()

    def _send(self, utterance: gateway_pb2.AnalyzeUtteranceRequest) -> None:
        ref = utterance.utterance
        key = (security.tenant(self.gateway.tenant), ref.conversation_id)
        settings = self.gateway.settings
        # Every limit is checked before the utterance is remembered or watched: nothing over them is held.
        too_big = oversized(utterance, settings)
        if too_big and set(too_big) >= set(given_modalities(utterance)):
            return self._reject(ref, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(too_big.values()))
        refused = None
        with self.lock:
            if self.closed.is_set():  # the stream ended while this request was read: watch nothing more
                return
            if ref.conversation_id and key not in self.watched and len(self.watched) >= settings.max_stream_conversations:
                refused = (f"this stream has sent to {len(self.watched)} conversations, its limit (MERC_MAX_STREAM_CONVERSATIONS); "
                           "open another stream for more")
            elif len(self.waiting) >= settings.max_stream_pending:
                refused = (f"{len(self.waiting)} utterances on this stream await their event, its limit (MERC_MAX_STREAM_PENDING); "
                           "send more once their events arrive")
            else:
                # Watch before sending, so the event cannot slip past.
                if ref.conversation_id and key not in self.watched:
                    self.watched.add(key)
                    self.gateway.hub.watch(key, self.merged)
                self.waiting.add((*key, ref.sequence))
        if refused:
            return self._reject(ref, grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        transcript, problem = self.gateway._transcribe(utterance)
        if transcript:
            too_big = oversized(utterance, settings)  # the transcript is text now, under the text limit too
            if self.send_transcripts:  # before the utterance goes out, so before its event
                self._tell(gateway_pb2.Transcribed(utterance=ref, transcript=transcript))
        if len(utterance.text) > settings.max_text_chars and "text" not in too_big:
            # Within the limit once its runs of spaces collapse (oversized): remember and send it collapsed,
            # as the text encoder reads it anyway, never the padding.
            utterance.text = collapse_spaces(utterance.text)
        # An oversized text is refused by _analyze (the other modalities go on) and never remembered as context.
        context_text = self.recent.next(key, ref.speaker, "" if "text" in too_big else utterance.text)
        if not utterance.context_text:  # a client that sends its own context keeps it
            utterance.context_text = context_text
        response, error = self.gateway._analyze(utterance, problem)
        if error is not None:
            with self.lock:
                self.waiting.discard((*key, ref.sequence))
            self._reject(ref, error[0], error[1], response.errors)

    def _reject(self, ref: common_pb2.UtteranceRef, code: grpc.StatusCode, reason: str, errors=()) -> None:
        self._tell(gateway_pb2.Rejected(utterance=ref, code=code.name, errors=errors, reason=reason))

    def _tell(self, item) -> None:
        """Queue a Rejected or Transcribed for the client. Blocks while the client is not reading its
        responses: back-pressure on its requests, not memory."""
        while not self.closed.is_set():
            try:
                self.merged.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def responses(self, context: grpc.ServicerContext):
        last = time.monotonic()
        while context.is_active() and not self.merged.overflowed:
            with self.lock:
                done = self.requests_done.is_set() and not self.waiting and self.merged.empty()  # rejections told too
            if done or time.monotonic() - last > self.gateway.stream_idle_s:
                return
            try:
                event = self.merged.get(timeout=0.2)
            except queue.Empty:
                continue
            last = time.monotonic()
            if isinstance(event, gateway_pb2.Rejected):
                yield gateway_pb2.StreamConversationResponse(rejected=event)
                continue
            if isinstance(event, gateway_pb2.Transcribed):
                yield gateway_pb2.StreamConversationResponse(transcribed=event)
                continue
            with self.lock:
                self.waiting.discard((event.utterance.tenant, event.utterance.conversation_id, event.utterance.sequence))
            yield gateway_pb2.StreamConversationResponse(event=event)

    def close(self) -> None:
        with self.lock:  # under the lock: the reader watches nothing after this
            self.closed.set()
            watched = list(self.watched)
        for key in watched:
            self.gateway.hub.unwatch(key, self.merged)

