"""One trace per utterance: client -> gateway -> encoders -> (Kafka headers) -> fusion -> the emitted event.

The real servicers on real gRPC servers (loopback, free ports), the in-process bus, in-process
inference and SQLite: only Kafka, PostgreSQL and Triton are stood in for.
"""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.inference.local import LocalInference
from merc.pipeline.encoder import Encoder
from merc.pipeline.fusion import FusionProcessor
from merc.pipeline.modalities import AudioPlugin, TextPlugin
from merc.runtime import monitoring, telemetry
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    events_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)
from unit.fakes import TinyInference

TEXT = "I can't believe you did that, it is wonderful."


@pytest.fixture
def spans(monkeypatch):
    """Every span this test makes, in memory (the tracer is put back afterwards)."""
    monkeypatch.setattr(telemetry, "_provider", None)
    monkeypatch.setattr(telemetry, "_service", "")
    exporter = InMemorySpanExporter()
    telemetry.setup_tracing("merc-test", exporter=exporter)
    return exporter


def observed_server(adder, servicer, name: str) -> Server:
    server = Server(0, "127.0.0.1", interceptors=[telemetry.ServerTracing(), monitoring.ServerMetrics()])
    server.add(adder, servicer, name)
    server.start()
    return server


@pytest.fixture(scope="module")
def inference():
    return monitoring.ObservedInference(LocalInference())


@pytest.fixture
def stack(tmp_path, inference):
    """gateway -> text and audio encoders -> MemoryBus -> fusion, wired as the services wire them."""
    settings = Settings(inference="local", join_window_ms=60_000, fusion_instance="test", tenant="t")
    store = Store(f"sqlite:///{tmp_path / 'merc.db'}")
    store.migrate()
    bus = MemoryBus(partitions=1)
    servers, stubs = [], {}
    for name, plugin in (("text", TextPlugin), ("audio", AudioPlugin)):
        encoder = Encoder(plugin(inference, settings), bus.producer(), settings.topic(f"embeddings.{name}"), settings.tenant)
        server = observed_server(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")
        servers.append(server)
        channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{server.port}"), telemetry.ClientTracing(),
                                         monitoring.FanoutMetrics(name))
        stubs[name] = encoder_pb2_grpc.EncoderServiceStub(channel)
    hub = EventHub(bus, settings.topic("emotions"))
    hub.start()
    gateway = GatewayServicer(stubs, store, hub, settings.tenant)
    telemetry.carry_context(gateway._pool)  # as services/gateway/__main__.py does
    servers.append(observed_server(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, gateway, "merc.v1.GatewayService"))
    fusion = FusionProcessor(bus, store, inference, settings)
    fusion.open()
    client = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{servers[-1].port}"), telemetry.ClientTracing())
    yield gateway_pb2_grpc.GatewayServiceStub(client), fusion, bus
    for server in servers:
        server.grpc.stop(None)
    hub.stop()
    fusion.close()
    store.close()


def hum() -> encoder_pb2.Audio:
    wave = 0.1 * np.sin(2 * np.pi * 180 * np.arange(16000) / 16000)
    return encoder_pb2.Audio(data=wave.astype("<f4").tobytes(), encoding="pcm_f32le", sample_rate=16000, channels=1)


def one(spans, name, kind=None):
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_one_trace_from_the_client_call_to_the_emitted_event(stack, spans):
    gateway, fusion, bus = stack
    ref = common_pb2.UtteranceRef(tenant="t", conversation_id="c1", sequence=0, speaker="a")
    with telemetry.span("client call", "client") as root:
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=TEXT, audio=hum()), timeout=60)
    assert fusion.step(poll_ms=0) == 1
    [record] = bus.messages("merc.emotions")

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}

    def parent(s):
        return by_id.get(s.parent.span_id) if s.parent else None

    trace_id = root.get_span_context().trace_id
    client = one(finished, "client call")
    assert {s.context.trace_id for s in finished} == {trace_id}, "one trace"

    call = one(finished, "merc.v1.GatewayService/AnalyzeUtterance", SpanKind.CLIENT)
    server = one(finished, "merc.v1.GatewayService/AnalyzeUtterance", SpanKind.SERVER)
    assert parent(call) is client and parent(server) is call
    calls = [s for s in finished if s.name == "merc.v1.EncoderService/Encode" and s.kind == SpanKind.CLIENT]
    assert len(calls) == 2 and all(parent(c) is server for c in calls)
    encodes = [s for s in finished if s.name == "merc.v1.EncoderService/Encode" and s.kind == SpanKind.SERVER]
    assert sorted(id(parent(e)) for e in encodes) == sorted(id(c) for c in calls)
    publishes = {}
    for modality, model in (("text", "text_encoder"), ("audio", "audio_encoder")):
        infer = one(finished, f"infer {model}", SpanKind.CLIENT)
        publish = one(finished, f"merc.embeddings.{modality} publish", SpanKind.PRODUCER)
        assert parent(infer) in encodes and parent(publish) is parent(infer)
        assert publish.attributes["merc.conversation_id"] == "c1"
        publishes[modality] = publish
    assert parent(publishes["text"]) is not parent(publishes["audio"])

    # Fusion: child of the first embedding's record, linked to the other's.
    utterance = one(finished, "fusion utterance", SpanKind.CONSUMER)
    assert parent(utterance) in publishes.values()
    [link] = utterance.links
    other = next(p for p in publishes.values() if p is not parent(utterance))
    assert link.context.span_id == other.context.span_id
    assert utterance.attributes["merc.join.outcome"] == "complete"
    stages = sorted(s.name for s in finished if parent(s) is utterance)
    assert stages == ["inference", "join", "store", "transaction"]

    # The emitted event carries the fusion span as its parent-to-be.
    emitted = telemetry.span_context_from_headers(record.headers)
    assert emitted.trace_id == trace_id and emitted.span_id == utterance.context.span_id
    assert events_pb2.EmotionEvent.FromString(record.value).utterance.conversation_id == "c1"

    # Ids, never payloads.
    for s in finished:
        for value in s.attributes.values():
            assert TEXT not in str(value), s.name


def test_a_stream_traces_each_utterance_under_its_own_message_span(stack, spans):
    gateway, fusion, bus = stack
    stop = threading.Event()

    def run_fusion():
        while not stop.is_set():
            fusion.step(poll_ms=20)

    def requests():
        for seq in range(2):
            ref = common_pb2.UtteranceRef(tenant="t", conversation_id="c2", sequence=seq, speaker="a")
            yield gateway_pb2.StreamConversationRequest(utterance=gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=TEXT))

    worker = threading.Thread(target=run_fusion, daemon=True)
    worker.start()
    try:
        with telemetry.span("client call", "client") as root:
            replies = list(gateway.StreamConversation(requests(), timeout=60))
    finally:
        stop.set()
        worker.join(10)
    assert [r.event.utterance.sequence for r in replies] == [0, 1]

    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    trace_id = root.get_span_context().trace_id
    server = one(finished, "merc.v1.GatewayService/StreamConversation", SpanKind.SERVER)
    assert server.parent.span_id == root.get_span_context().span_id  # a stream sends the caller's context
    messages = [s for s in finished if s.name == "merc.v1.GatewayService/StreamConversation message"]
    assert sorted(m.attributes["merc.utterance"] for m in messages) == [0, 1]
    assert all(m.parent.span_id == server.context.span_id for m in messages)
    calls = [s for s in finished if s.name == "merc.v1.EncoderService/Encode" and s.kind == SpanKind.CLIENT]
    for call in calls:  # each fan-out hangs under the message it came from
        message = by_id[call.parent.span_id]
        assert message in messages and message.attributes["merc.utterance"] == call.attributes["merc.utterance"]
    utterances = [s for s in finished if s.name == "fusion utterance"]
    assert sorted(u.attributes["merc.utterance"] for u in utterances) == [0, 1]
    assert {u.context.trace_id for u in utterances} == {trace_id}


def test_the_revision_a_late_modality_causes_continues_that_modality_s_trace(tmp_path, spans):
    settings = Settings(join_window_ms=0, fusion_instance="test")
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    store.migrate()
    bus = MemoryBus(partitions=1)
    fusion = FusionProcessor(bus, store, TinyInference(), settings)
    fusion.open()

    def publish(modality, topic):
        e = events_pb2.ModalityEmbedding(
            utterance=common_pb2.UtteranceRef(tenant="t", conversation_id="c", sequence=0, speaker="a"),
            modality=modality, vector=[0.1] * (16 if topic.endswith("text") else 128),
            expected_modalities=[common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO], sent_at_ms=1)
        with telemetry.span(f"{topic} publish", "producer") as s:
            bus.producer().send(topic, b"c", e.SerializeToString(), telemetry.with_trace_headers((("schema", b"x"), ("tenant", b"t"))))
        return s.get_span_context()

    text = publish(common_pb2.MODALITY_TEXT, "merc.embeddings.text")
    assert fusion.step(poll_ms=0) == 1  # the window is 0: released at once, degraded
    audio = publish(common_pb2.MODALITY_AUDIO, "merc.embeddings.audio")
    assert fusion.step(poll_ms=0) == 1  # the late audio: revision 1
    first, revision = [s for s in spans.get_finished_spans() if s.name == "fusion utterance"]
    assert (first.parent.span_id, first.attributes["merc.join.outcome"]) == (text.span_id, "deadline")
    assert (revision.parent.span_id, revision.attributes["merc.join.outcome"]) == (audio.span_id, "revision")
    assert revision.links == () or list(revision.links) == []
    events = bus.messages("merc.emotions")
    assert [telemetry.span_context_from_headers(m.headers).span_id for m in events] == [first.context.span_id, revision.context.span_id]
    fusion.close()
    store.close()


def test_records_without_a_traceparent_start_a_trace_of_their_own(tmp_path, spans):
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    store.migrate()
    bus = MemoryBus(partitions=1)
    fusion = FusionProcessor(bus, store, TinyInference(), Settings(join_window_ms=0, fusion_instance="test"))
    fusion.open()
    e = events_pb2.ModalityEmbedding(utterance=common_pb2.UtteranceRef(tenant="t", conversation_id="c", sequence=0),
                                     modality=common_pb2.MODALITY_TEXT, vector=[0.1] * 16, sent_at_ms=1)
    bus.producer().send("merc.embeddings.text", b"c", e.SerializeToString(), (("tenant", b"t"),))
    assert fusion.step(poll_ms=0) == 1
    [utterance] = [s for s in spans.get_finished_spans() if s.name == "fusion utterance"]
    assert utterance.parent is None
    [m] = bus.messages("merc.emotions")
    assert telemetry.span_context_from_headers(m.headers).trace_id == utterance.context.trace_id
    fusion.close()
    store.close()


def test_trace_headers_replace_a_stale_traceparent_and_ignore_garbage():
    assert telemetry.span_context_from_headers((("traceparent", b"not a traceparent"),)) is None
    assert telemetry.span_context_from_headers((("traceparent", None),)) is None
    assert telemetry.with_trace_headers((("schema", b"x"), ("traceparent", b"stale"))) == (("schema", b"x"),)  # no span: none


def test_spans_reach_an_otlp_collector_when_an_endpoint_is_set(monkeypatch):
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    received = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setattr(telemetry, "_provider", None)
    monkeypatch.setattr(telemetry, "_service", "")
    try:
        provider = telemetry.setup_tracing("merc-gateway", f"http://127.0.0.1:{port}")
        with telemetry.span("exported", attributes={"merc.conversation_id": "c"}):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.stop(None)
    [resource_spans] = [rs for r in received for rs in r.resource_spans]
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    names = [s.name for ss in resource_spans.scope_spans for s in ss.spans]
    assert (service, names) == ("merc-gateway", ["exported"])
