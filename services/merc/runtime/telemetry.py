"""Tracing: one trace per utterance, from the client's call to the emitted EmotionEvent.

The W3C trace context travels in gRPC metadata (client -> gateway -> encoder -> Triton) and in the
`traceparent` header of Kafka records (encoder -> merc.embeddings.* -> fusion -> merc.emotions):

    client ─▶ gateway (SERVER) ─▶ Encode (CLIENT) ─▶ encoder (SERVER) ─┬─▶ infer <model>
                                                                      └─▶ <topic> publish (PRODUCER)
                                                                              │ traceparent header
    merc.emotions record ◀─ traceparent ── fusion utterance (CONSUMER) ◀──────┘
                                            ├─ join · inference · store · transaction

The fusion span's parent rule: each record's trace context is remembered per utterance as it is
joined; an emission's span is the child of the first of those contexts not yet used by an earlier
emission of that utterance (the first modality to arrive; for a revision, the late one that caused
it) and links to the rest. Contexts live in memory only: an utterance restored from the join state
after a restart starts a new trace.

Spans carry ids (conversation, utterance, modality, model, topic), never a payload: no text, media
or vectors. Business code calls these helpers; nothing else imports OpenTelemetry.
"""

from __future__ import annotations

import collections
import contextvars
import datetime
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from merc.runtime.interceptors import HEALTH_PREFIX, wrap_handler

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]

_KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT,
          "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER}
# W3C Trace Context only: baggage could carry anything a caller put in it, and we forward nothing unread.
_W3C = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")
# Status codes that are the server's fault (OpenTelemetry's gRPC conventions); a bad request is not.
_SERVER_ERRORS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}

_provider: TracerProvider | None = None
_service = ""


# ---- setup ------------------------------------------------------------------------------------

def setup_tracing(service: str, otlp_endpoint: str = "", sample_ratio: float = 1.0,
                  exporter: SpanExporter | None = None) -> TracerProvider:
    """Trace this process as `service`; export over OTLP/gRPC when an endpoint is given.

    Spans are made even without an exporter: their ids still reach the logs and the next hop's
    headers, so a trace that a later hop exports stays whole. `exporter` (tests) gets every span
    synchronously.
    """
    global _provider, _service
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "merc"}),
                              sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if otlp_endpoint:
        # Imported here: a process that exports nothing need not load gRPC's OTLP stubs.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        log.info("exporting traces to %s", otlp_endpoint)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider, _service = provider, service
    return provider


def tracer() -> trace.Tracer:
    # Not the global provider: tests set up tracing more than once in one process.
    return (_provider or trace.get_tracer_provider()).get_tracer("merc")


def service_name() -> str:
    return _service


# ---- spans ------------------------------------------------------------------------------------

@contextmanager
def span(name: str, kind: str = "internal", attributes: Mapping | None = None) -> Iterator[trace.Span]:
    """A span around the block, current inside it; an exception marks it failed."""
    with tracer().start_as_current_span(name, kind=_KINDS[kind], attributes=attributes) as s:
        yield s


def child_span(name: str, kind: str = "internal", attributes: Mapping | None = None):
    """A span only inside a traced call: background work (warm-ups, batches) starts no trace of its own."""
    if not trace.get_current_span().get_span_context().is_valid:
        return nullcontext()
    return span(name, kind, attributes)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current span, if any."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def utterance_attributes(message) -> dict:
    """The utterance a request is about (ids only), from any MERC message with an `utterance` ref."""
    ref = getattr(message, "utterance", None)
    if ref is not None and not hasattr(ref, "conversation_id"):
        ref = getattr(ref, "utterance", None)  # StreamConversationRequest -> AnalyzeUtteranceRequest -> ref
    if ref is None or not hasattr(ref, "conversation_id"):
        return {}
    return {"merc.tenant": ref.tenant, "merc.conversation_id": ref.conversation_id, "merc.utterance": ref.sequence}


# ---- propagation ------------------------------------------------------------------------------

def inject(context: otel_context.Context | None = None) -> dict[str, str]:
    """The W3C headers for the current (or given) context; empty when there is no span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return _W3C.extract(carrier)


def with_trace_headers(headers: Iterable[tuple[str, bytes]], context: otel_context.Context | None = None) -> Headers:
    """Kafka record headers plus `traceparent` (and `tracestate`) of the current or given context."""
    kept = tuple((k, v) for k, v in headers if k not in _TRACE_HEADERS)
    return kept + tuple((k, v.encode()) for k, v in inject(context).items())


def span_context_from_headers(headers: Iterable[tuple[str, bytes | None]]) -> SpanContext | None:
    """The trace context a Kafka record carries, if a valid one."""
    carrier = {k: v.decode("ascii", "replace") for k, v in headers if k in _TRACE_HEADERS and v is not None}
    if "traceparent" not in carrier:
        return None
    ctx = trace.get_current_span(extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


def carry_context(executor):
    """Make executor.submit run each task in its submitter's context: pool threads do not inherit it,
    and the gateway fans an utterance out to the encoders from one."""
    submit = executor.submit

    def submit_in_context(fn, /, *args, **kwargs):
        return submit(contextvars.copy_context().run, fn, *args, **kwargs)

    executor.submit = submit_in_context
    return executor


# ---- gRPC -------------------------------------------------------------------------------------

def status_of(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status a handler ended with: what it set or aborted with, else OK / UNKNOWN."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, GeneratorExit):  # a response stream closed early: the client went away
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


def _end_rpc_span(s: trace.Span, code: grpc.StatusCode, error: BaseException | None = None) -> None:
    s.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERRORS:
        s.set_status(Status(StatusCode.ERROR, code.name))
        if error is not None and type(error) is not Exception:  # context.abort() raises a bare Exception
            s.record_exception(error)
    s.end()


class ServerTracing(grpc.ServerInterceptor):
    """A SERVER span per call, child of the caller's traceparent. A request stream gets a span per
    message, current in the thread that reads it until the next one is read, so what the handler
    does with each message (the gateway's fan-out) hangs under it."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        service, _, name = method.strip("/").partition("/")
        base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        def wrap(behaviour, request_streaming, response_streaming):
            def run(request, context):
                parent = extract({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
                attributes = base if request_streaming else {**base, **utterance_attributes(request)}
                s = tracer().start_span(method.strip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes)
                ctx = trace.set_span_in_context(s, parent)
                if request_streaming:
                    request = _MessageSpans(request, ctx, method.strip("/"))
                if response_streaming:
                    return self._stream(behaviour, request, context, s, ctx)
                token = otel_context.attach(ctx)
                error = None
                try:
                    return behaviour(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    otel_context.detach(token)
                    if request_streaming:
                        request.close()
                    _end_rpc_span(s, status_of(context, error), error)

            return run

        return wrap_handler(handler, wrap)

    @staticmethod
    def _stream(behaviour, request, context, s, ctx):
        token = otel_context.attach(ctx)
        error = None
        try:
            yield from behaviour(request, context)
        except BaseException as e:
            error = e
            raise
        finally:
            otel_context.detach(token)
            if isinstance(request, _MessageSpans):
                request.close()
            _end_rpc_span(s, status_of(context, error), error)


class _MessageSpans:
    """A request iterator that opens a span per message (see ServerTracing)."""

    def __init__(self, requests, parent: otel_context.Context, method: str) -> None:
        self._requests = requests
        self._parent = parent
        self._name = f"{method} message"
        self._open: tuple[trace.Span, object, int] | None = None
        self._lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        self.close()
        message = next(self._requests)
        s = tracer().start_span(self._name, context=self._parent, attributes=utterance_attributes(message))
        with self._lock:
            self._open = (s, otel_context.attach(trace.set_span_in_context(s, self._parent)), threading.get_ident())
        return message

    def close(self) -> None:
        with self._lock:
            opened, self._open = self._open, None
        if opened is None:
            return
        s, token, thread = opened
        if thread == threading.get_ident():  # a context can only be detached where it was attached
            otel_context.detach(token)
        s.end()


_ClientDetails = collections.namedtuple(
    "_ClientDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"))


class _Details(_ClientDetails, grpc.ClientCallDetails):
    pass


def _with_metadata(details: grpc.ClientCallDetails, extra: Mapping[str, str]) -> grpc.ClientCallDetails:
    metadata = [(k, v) for k, v in (details.metadata or ()) if k not in _TRACE_HEADERS] + list(extra.items())
    return _Details(details.method, details.timeout, metadata, details.credentials,
                    getattr(details, "wait_for_ready", None), getattr(details, "compression", None))


class ClientTracing(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """A CLIENT span around each unary call, its traceparent sent as metadata. Streaming calls send
    the caller's context without a span of their own."""

    def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method.strip("/")
        service, _, name = method.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name, **utterance_attributes(request)}
        s = tracer().start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        try:
            outcome = continuation(_with_metadata(client_call_details, inject(trace.set_span_in_context(s))), request)
        except BaseException as e:
            _end_rpc_span(s, grpc.StatusCode.UNKNOWN, e)
            raise
        outcome.add_done_callback(lambda call: _end_rpc_span(s, call.code() or grpc.StatusCode.UNKNOWN))
        return outcome

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(_with_metadata(client_call_details, inject()), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(_with_metadata(client_call_details, inject()), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(_with_metadata(client_call_details, inject()), request_iterator)


# ---- the fusion side: records in, events out --------------------------------------------------

class TraceCarrier:
    """The trace contexts the consumed records of each utterance carried, until it is emitted."""

    def __init__(self) -> None:
        self._contexts: dict[tuple, list[SpanContext]] = {}

    def remember(self, key: tuple, headers: Iterable[tuple[str, bytes | None]]) -> None:
        ctx = span_context_from_headers(headers)
        if ctx is not None:
            self._contexts.setdefault(key, []).append(ctx)

    def take(self, key: tuple) -> list[SpanContext]:
        return self._contexts.pop(key, [])

    def forget(self, *prefix) -> None:
        """Drop every key that starts with prefix (an erased conversation)."""
        for key in [k for k in self._contexts if k[: len(prefix)] == prefix]:
            del self._contexts[key]

    def clear(self) -> None:
        self._contexts.clear()


class BatchSpans:
    """One span per utterance processed together in a batch (a fusion step).

    Each starts when the utterance's first modality arrived, with a `join` child up to its release;
    stage() times a stage the batch shares (one model call, one transaction) as a child of each.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._spans: list[trace.Span] = []

    def start(self, carried: list[SpanContext], first_arrival_ms: int, released_ms: int, attributes: Mapping) -> None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(carried[0])) if carried else otel_context.Context()
        links = [Link(c) for c in carried[1:]]
        start_ns = first_arrival_ms * 1_000_000
        s = tracer().start_span(self._name, context=parent, kind=SpanKind.CONSUMER, links=links,
                                attributes=attributes, start_time=start_ns)
        tracer().start_span("join", context=trace.set_span_in_context(s), start_time=start_ns).end(released_ms * 1_000_000)
        self._spans.append(s)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.time_ns()
        error = None
        try:
            yield
        except BaseException as e:
            error = e
            raise
        finally:
            end = time.time_ns()
            for s in self._spans:
                child = tracer().start_span(name, context=trace.set_span_in_context(s), start_time=start)
                if error is not None:
                    child.set_status(Status(StatusCode.ERROR, type(error).__name__))
                child.end(end)

    def headers(self, i: int, headers: Iterable[tuple[str, bytes]]) -> Headers:
        """Headers for what the i-th utterance emits: its span is the parent of whatever reads it."""
        return with_trace_headers(headers, trace.set_span_in_context(self._spans[i]))

    def end(self, error: BaseException | None = None) -> None:
        for s in self._spans:
            if error is not None:
                s.set_status(Status(StatusCode.ERROR, type(error).__name__))
            s.end()
        self._spans = []


# ---- logs -------------------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span ids of the span current when it was logged.

    Only the message and the exception are the caller's words: never log a payload (request text,
    media bytes, vectors) in either.
    """

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _service:
            out["service"] = _service
        ids = current_ids()
        if ids:
            out["trace_id"], out["span_id"] = ids
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)
