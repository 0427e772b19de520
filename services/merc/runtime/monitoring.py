"""Prometheus metrics of the MERC services, and the HTTP endpoint Prometheus scrapes.

Every label is a small closed set (modality, stage, outcome, gRPC method and status code, model,
topic): never a conversation id, a tenant or anything from a payload. deploy/grafana/merc.json
charts these names and the chart's PrometheusRule alerts on them. (merc/metrics.py is something
else: classification metrics for evaluation.)

The families live on prometheus_client's default registry, the library's in-process view (tests
read it); a deployable's /metrics serves only its own (COMPONENTS), so the gateway shows no fusion
counters stuck at 0 and a dashboard's `sum` never mixes in processes that cannot move a series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import grpc
import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from merc.inference import InferenceClient
from merc.runtime import telemetry
from merc.runtime.interceptors import HEALTH_PREFIX, wrap_handler

log = logging.getLogger(__name__)

# Seconds: 1 ms (a cached text embedding) to 30 s (a cold Triton model, a long audio clip).
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The join waits up to the window (1.5 s by default), longer for an utterance behind a slow predecessor.
JOIN_WAIT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# From a request reaching MERC to its event: one fusion step for a complete utterance (tens of ms),
# the join window (1.5 s by default) for a degraded one, minutes for a revision or a backlog.
EVENT_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
CONFIDENCE = tuple(round(0.1 * i, 1) for i in range(1, 11))

ENCODER_STAGES = ("decode_features", "inference", "publish")
FUSION_STAGES = ("inference", "store", "transaction")
# complete / degraded (released at the deadline without every modality) / revised (re-emitted with a
# late modality) are releases; late / duplicate / dropped are what happened to an arriving embedding.
JOIN_OUTCOMES = ("complete", "degraded", "overflow", "revised", "late", "duplicate", "dropped")
_RELEASE_OUTCOMES = {"complete": "complete", "deadline": "degraded", "revision": "revised"}
# An emitted event: with every expected modality, without some (deadline or overflow), or a revision.
EVENT_KINDS = ("complete", "degraded", "revised")

GRPC_HANDLED = Counter("merc_grpc_server_handled", "gRPC calls handled, by method and status code", ["method", "code"])
GRPC_SECONDS = Histogram("merc_grpc_server_handling_seconds", "Time to handle a gRPC call (a stream: its whole life)",
                         ["method"], buckets=LATENCY)
FANOUT_SECONDS = Histogram("merc_gateway_fanout_seconds",
                           "One encoder call of the gateway's fan-out, by modality (\"transcription\" for Transcribe) and status code",
                           ["modality", "code"], buckets=LATENCY)
ENCODER_STAGE_SECONDS = Histogram("merc_encoder_stage_seconds", "Encoder stages of one utterance: decode_features, inference, publish",
                                  ["modality", "stage"], buckets=LATENCY)
INFERENCE_SECONDS = Histogram("merc_inference_seconds", "One inference call (Triton or in-process), by model", ["model"], buckets=LATENCY)
INFERENCE_ERRORS = Counter("merc_inference_errors", "Inference calls that failed, by model", ["model"])
FUSION_STAGE_SECONDS = Histogram("merc_fusion_stage_seconds", "Fusion stages of one step: inference, store, transaction",
                                 ["stage"], buckets=LATENCY)
JOIN_WAIT_SECONDS = Histogram("merc_fusion_join_wait_seconds", "From an utterance's first modality to its release, by outcome",
                              ["outcome"], buckets=JOIN_WAIT)
JOIN_OUTCOMES_TOTAL = Counter("merc_fusion_join_outcomes", "Join outcomes: releases and late, duplicate or dropped embeddings",
                              ["outcome"])
EVENTS = Counter("merc_fusion_events", "EmotionEvents emitted (committed to merc.emotions)")
DLQ = Counter("merc_fusion_dlq", "Undecodable records sent to the dead-letter topic")
STEP_FAILURES = Counter("merc_fusion_step_failures", "Fusion steps that failed and were replayed from the last transaction")
CONFIDENCE_HIST = Histogram("merc_fusion_confidence", "Calibrated confidence of emitted events", buckets=CONFIDENCE)
CONVERSATIONS_HELD = Gauge("merc_fusion_conversations", "Conversations whose join state this fusion instance holds in memory")
CONSUMER_LAG = Gauge("merc_fusion_consumer_lag", "Records of the embedding topics not yet consumed, by topic", ["topic"])
EVENT_LATENCY = Histogram("merc_fusion_event_latency_seconds",
                          "End to end, an emitted event's latency_ms: from the request reaching MERC to its prediction, by kind "
                          "(complete, degraded, revised)", ["kind"], buckets=EVENT_LATENCY_BUCKETS)
SERVING = Gauge("merc_serving", "1 while this process's gRPC health is SERVING, 0 while NOT_SERVING")

# What each deployable's /metrics serves, besides the process's own (CPU, memory, GC). Fusion's gRPC
# server answers health checks only, so it has no gRPC families; the gateway calls no model.
COMPONENTS = {
    "gateway": (SERVING, GRPC_HANDLED, GRPC_SECONDS, FANOUT_SECONDS),
    "encoder": (SERVING, GRPC_HANDLED, GRPC_SECONDS, ENCODER_STAGE_SECONDS, INFERENCE_SECONDS, INFERENCE_ERRORS),
    "fusion": (SERVING, INFERENCE_SECONDS, INFERENCE_ERRORS, FUSION_STAGE_SECONDS, JOIN_WAIT_SECONDS, JOIN_OUTCOMES_TOTAL,
               EVENTS, DLQ, STEP_FAILURES, CONFIDENCE_HIST, CONVERSATIONS_HELD, CONSUMER_LAG, EVENT_LATENCY),
}

# Every combination a dashboard plots exists from the start (a rate over a missing series is no data, not 0).
for _o in JOIN_OUTCOMES:
    JOIN_OUTCOMES_TOTAL.labels(_o)
for _s in FUSION_STAGES:
    FUSION_STAGE_SECONDS.labels(_s)
for _k in EVENT_KINDS:
    EVENT_LATENCY.labels(_k)


def registry(component: str) -> CollectorRegistry:
    """A registry holding one deployable's families (COMPONENTS) and the process collectors."""
    r = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=r)
    for metric in COMPONENTS[component]:
        r.register(metric)
    return r


def serve(component: str, port: int, host: str = "127.0.0.1"):
    """Expose one deployable's /metrics on host:port in a daemon thread; port 0: off. Returns the
    server (or None).

    A port already taken (two services on one host with the same MERC_METRICS_PORT) is logged, not
    fatal: the service itself still serves, only unobserved.
    """
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry(component))
    except OSError as e:
        log.error("cannot serve metrics on %s:%d (%s): set MERC_METRICS_PORT to a free port, or 0", host, port, e.strerror)
        return None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


# ---- gRPC -------------------------------------------------------------------------------------

class ServerMetrics(grpc.ServerInterceptor):
    """Count and time every call (health checks apart) by method and status code."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        name = method.rsplit("/", 1)[-1]

        def wrap(behaviour, request_streaming, response_streaming):
            def run(request, context):
                if response_streaming:
                    return _timed_stream(behaviour(request, context), context, name)
                start, error = time.perf_counter(), None
                try:
                    return behaviour(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    _handled(name, telemetry.status_of(context, error), time.perf_counter() - start)

            return run

        return wrap_handler(handler, wrap)


def _timed_stream(responses: Iterable, context, name: str) -> Iterator:
    start, error = time.perf_counter(), None
    try:
        yield from responses
    except BaseException as e:
        error = e
        raise
    finally:
        _handled(name, telemetry.status_of(context, error), time.perf_counter() - start)


def _handled(method: str, code: grpc.StatusCode, seconds: float) -> None:
    GRPC_HANDLED.labels(method, code.name).inc()
    GRPC_SECONDS.labels(method).observe(seconds)
    # An access log line: the method and outcome only (with the trace id in JSON logs), never the request.
    log.debug("%s %s in %.1f ms", method, code.name, seconds * 1000)


class FanoutMetrics(grpc.UnaryUnaryClientInterceptor):
    """Time the gateway's calls to one encoder, by status code."""

    def __init__(self, modality: str) -> None:
        self.modality = modality

    def intercept_unary_unary(self, continuation, client_call_details, request):
        start = time.perf_counter()
        # A transcription (seconds of Whisper) apart from the audio encoder's Encode (milliseconds): one
        # series would hide both.
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else str(method)
        label = "transcription" if method.endswith("/Transcribe") else self.modality
        outcome = continuation(client_call_details, request)
        outcome.add_done_callback(lambda call: FANOUT_SECONDS.labels(label, (call.code() or grpc.StatusCode.UNKNOWN).name)
                                  .observe(time.perf_counter() - start))
        return outcome


# ---- inference and the encoder ----------------------------------------------------------------

class _Tally(threading.local):
    seconds = 0.0


_inference_tally = _Tally()


class ObservedInference(InferenceClient):
    """Any inference client, timed per model and traced (a CLIENT span inside a traced call)."""

    def __init__(self, inner: InferenceClient) -> None:
        self.inner = inner

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        try:
            with telemetry.child_span(f"infer {model}", "client", {"merc.model": model}):
                return self.inner.infer(model, inputs)
        except BaseException:
            INFERENCE_ERRORS.labels(model).inc()
            raise
        finally:
            seconds = time.perf_counter() - start
            INFERENCE_SECONDS.labels(model).observe(seconds)
            _inference_tally.seconds += seconds

    def ready(self, model: str) -> bool:
        return self.inner.ready(model)

    def version(self, model: str) -> str:
        return self.inner.version(model)

    def input_shapes(self, model: str) -> dict[str, list[int]]:
        return self.inner.input_shapes(model)

    def close(self) -> None:
        self.inner.close()


@contextmanager
def encode_stages(modality: str) -> Iterator[None]:
    """Time a plug-in's encode, split into its inference calls (ObservedInference, same thread) and
    the rest: decoding, resampling, face detection, features. Only encodes that succeed count."""
    start, before = time.perf_counter(), _inference_tally.seconds
    yield
    inference = _inference_tally.seconds - before
    ENCODER_STAGE_SECONDS.labels(modality, "inference").observe(inference)
    ENCODER_STAGE_SECONDS.labels(modality, "decode_features").observe(max(0.0, time.perf_counter() - start - inference))


@contextmanager
def encoder_stage(modality: str, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    ENCODER_STAGE_SECONDS.labels(modality, stage).observe(time.perf_counter() - start)


# ---- fusion -----------------------------------------------------------------------------------

def join_added(outcome: str) -> None:
    """What Join.add said of an arriving embedding (pending is no outcome yet)."""
    if outcome in JOIN_OUTCOMES:
        JOIN_OUTCOMES_TOTAL.labels(outcome).inc()


def released(outcome: str, waited_ms: int) -> None:
    """A Release's outcome (complete | deadline | overflow | revision) and how long its join waited."""
    name = _RELEASE_OUTCOMES.get(outcome, outcome)
    JOIN_OUTCOMES_TOTAL.labels(name).inc()
    JOIN_WAIT_SECONDS.labels(name).observe(max(0, waited_ms) / 1000)


@contextmanager
def fusion_stage(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    FUSION_STAGE_SECONDS.labels(stage).observe(time.perf_counter() - start)


def emitted(confidences: Iterable[float], dead_letters: int) -> None:
    """After a committed transaction: its events and dead letters."""
    for c in confidences:
        EVENTS.inc()
        CONFIDENCE_HIST.observe(c)
    if dead_letters:
        DLQ.inc(dead_letters)


def event_latency(latency_ms: int, degraded: bool, revision: int) -> None:
    """An emitted event's latency_ms (the value it carries); 0 means unknown (an out-of-range clock): not observed."""
    if latency_ms > 0:
        kind = "revised" if revision else "degraded" if degraded else "complete"
        EVENT_LATENCY.labels(kind).observe(latency_ms / 1000)


def serving(up: bool) -> None:
    SERVING.set(1 if up else 0)


def step_failed() -> None:
    STEP_FAILURES.inc()


def conversations_held(n: int) -> None:
    CONVERSATIONS_HELD.set(n)


def consumer_lag(lag: Mapping[tuple[str, int], int], topics: Iterable[str]) -> None:
    """Set the lag gauge of each topic (0 where nothing is owned or known)."""
    for topic in topics:
        CONSUMER_LAG.labels(topic).set(sum(n for (t, _), n in lag.items() if t == topic))
