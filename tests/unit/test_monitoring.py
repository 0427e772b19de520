"""Prometheus metrics move with traffic: the gateway's fan-out, the encoder's stages, fusion's join,
events, dead letters, confidence and lag; and /metrics serves them over HTTP."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import grpc
import metric_names
import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.gateway.server import GatewayServicer
from merc.pipeline.encoder import Encoder
from merc.pipeline.fusion import FusionProcessor
from merc.pipeline.modalities import TextPlugin
from merc.runtime import monitoring
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
from unit.fakes import TEXT_DIM, TinyInference

TEXT, AUDIO = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO


class Delta:
    """Sample values relative to when it was made (the registry is process-wide)."""

    def __init__(self) -> None:
        self._before = self._all()

    @staticmethod
    def _all() -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in REGISTRY.collect() for s in m.samples}

    def __call__(self, name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return (REGISTRY.get_sample_value(name, labels) or 0.0) - self._before.get(key, 0.0)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'm.db'}")
    s.migrate()
    yield s
    s.close()


def test_gateway_and_encoder_metrics_count_calls_stages_and_codes(store):
    settings = Settings(fusion_instance="test", tenant="t", max_text_chars=40)
    bus = MemoryBus(partitions=1)
    inference = monitoring.ObservedInference(TinyInference())
    encoder = Encoder(TextPlugin(inference, settings), bus.producer(), settings.topic("embeddings.text"), settings.tenant)
    servers = []
    for adder, servicer, name in [(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")]:
        server = Server(0, "127.0.0.1", interceptors=[monitoring.ServerMetrics()])
        server.add(adder, servicer, name)
        server.start()
        servers.append(server)
    channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{servers[0].port}"), monitoring.FanoutMetrics("text"))
    gateway = Server(0, "127.0.0.1", interceptors=[monitoring.ServerMetrics()])
    gateway.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                GatewayServicer({"text": encoder_pb2_grpc.EncoderServiceStub(channel)}, store, None, "t"), "merc.v1.GatewayService")
    gateway.start()
    servers.append(gateway)
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(f"127.0.0.1:{gateway.port}"))
    delta = Delta()
    try:
        ref = common_pb2.UtteranceRef(conversation_id="c", sequence=0)
        stub.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="Hello there."), timeout=30)
        with pytest.raises(grpc.RpcError):  # longer than max_text_chars: refused by the encoder
            stub.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="x" * 50), timeout=30)
        with pytest.raises(grpc.RpcError):  # a transcription is timed apart from the encoder's Encode
            encoder_pb2_grpc.EncoderServiceStub(channel).Transcribe(encoder_pb2.TranscribeRequest(), timeout=30)
    finally:
        for s in servers:
            s.grpc.stop(None)

    assert delta("merc_grpc_server_handled_total", method="AnalyzeUtterance", code="OK") == 1
    assert delta("merc_grpc_server_handled_total", method="AnalyzeUtterance", code="INVALID_ARGUMENT") == 1
    assert delta("merc_grpc_server_handled_total", method="Encode", code="OK") == 1
    assert delta("merc_grpc_server_handled_total", method="Encode", code="INVALID_ARGUMENT") == 1
    assert delta("merc_grpc_server_handling_seconds_count", method="Encode") == 2
    assert delta("merc_gateway_fanout_seconds_count", modality="text", code="OK") == 1
    assert delta("merc_gateway_fanout_seconds_count", modality="text", code="INVALID_ARGUMENT") == 1
    assert delta("merc_gateway_fanout_seconds_count", modality="transcription", code="UNIMPLEMENTED") == 1
    for stage in monitoring.ENCODER_STAGES:  # only the encode that succeeded
        assert delta("merc_encoder_stage_seconds_count", modality="text", stage=stage) == 1, stage
    assert delta("merc_inference_seconds_count", model="text_encoder") == 1
    assert delta("merc_grpc_server_handled_total", method="Check", code="OK") == 0  # health checks are not counted


TENANT_HEADER = (("tenant", b"t"),)


def embedding(seq, modality=TEXT, expected=(TEXT,)):
    return events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant="t", conversation_id="c", sequence=seq, speaker="a"),
        modality=modality, vector=[0.1] * (TEXT_DIM if modality == TEXT else 128),
        expected_modalities=list(expected), sent_at_ms=1)


def test_fusion_metrics_count_join_outcomes_events_dead_letters_confidence_and_lag(store):
    bus = MemoryBus(partitions=1)
    fusion = FusionProcessor(bus, store, monitoring.ObservedInference(TinyInference()),
                             Settings(join_window_ms=0, fusion_instance="test"))
    fusion.open()
    send = bus.producer().send
    delta = Delta()
    both = (TEXT, AUDIO)
    send("merc.embeddings.text", b"c", embedding(0).SerializeToString(), TENANT_HEADER)      # complete
    send("merc.embeddings.text", b"c", embedding(1, expected=both).SerializeToString(), TENANT_HEADER)  # degraded (window 0)
    send("merc.embeddings.text", b"c", b"\xff not a protobuf")                              # dead letter
    assert fusion.step(poll_ms=0) == 2
    send("merc.embeddings.audio", b"c", embedding(1, AUDIO, both).SerializeToString(), TENANT_HEADER)  # late -> revised
    send("merc.embeddings.text", b"c", embedding(0).SerializeToString(), TENANT_HEADER)      # duplicate
    send("merc.embeddings.text", b"c", embedding(2).SerializeToString(), TENANT_HEADER)
    assert fusion.step(poll_ms=0) == 2
    fusion.close()

    outcomes = {o: delta("merc_fusion_join_outcomes_total", outcome=o) for o in monitoring.JOIN_OUTCOMES}
    assert outcomes == {"complete": 2, "degraded": 1, "overflow": 0, "revised": 1, "late": 1, "duplicate": 1, "dropped": 0}
    assert delta("merc_fusion_join_wait_seconds_count", outcome="degraded") == 1
    assert delta("merc_fusion_events_total") == 4
    assert delta("merc_fusion_dlq_total") == 1
    assert delta("merc_fusion_confidence_count") == 4
    assert 0 < delta("merc_fusion_confidence_sum") <= 4
    for stage in monitoring.FUSION_STAGES:
        assert delta("merc_fusion_stage_seconds_count", stage=stage) == 2, stage
    assert delta("merc_inference_seconds_count", model="fusion") >= 2
    # Lag, per embedding topic: the poll consumed everything.
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "merc.embeddings.text"}) == 0
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "merc.embeddings.vision"}) == 0


def test_consumer_lag_counts_what_is_not_yet_consumed():
    bus = MemoryBus(partitions=2)
    from merc.bus.base import ConsumerSpec

    consumer = bus.consumer(ConsumerSpec(["a", "b"], group_id="g"))
    for i in range(5):
        bus.producer().send("a", str(i).encode(), b"v")
    assert sum(consumer.lag().values()) == 5
    consumer.poll(timeout_ms=0, max_records=2)
    assert sum(consumer.lag().values()) == 3
    monitoring.consumer_lag(consumer.lag(), ["a", "b"])
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "a"}) == 3
    assert REGISTRY.get_sample_value("merc_fusion_consumer_lag", {"topic": "b"}) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(component: str) -> str:
    """One deployable's /metrics, over HTTP from monitoring.serve, as its process would serve it."""
    server = monitoring.serve(component, free_port(), "127.0.0.1")
    try:
        port = server.server_address[1]
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()


def families(body: str) -> set[str]:
    """Family names (a counter's without _total); the text format's *_created series read as their own, dropped."""
    return {f.name for f in text_string_to_metric_families(body) if not f.name.endswith("_created")}


def test_metrics_are_served_over_http_and_port_0_is_off():
    assert monitoring.serve("fusion", 0) is None
    monitoring.emitted([0.9], dead_letters=0)
    body = scrape("fusion")
    for name in ("merc_fusion_events_total", "merc_fusion_confidence_bucket", "merc_fusion_join_outcomes_total",
                 "merc_fusion_event_latency_seconds_bucket", "merc_serving", "process_cpu_seconds_total"):
        assert name in body, name
    assert body == body.replace("conversation_id", "").replace("tenant", "")  # no per-conversation or tenant labels


def test_each_deployable_serves_only_its_own_families():
    """The gateway used to show merc_fusion_events_total 0: every family was on every /metrics."""
    served = {c: families(scrape(c)) for c in monitoring.COMPONENTS}
    own = {"gateway": ("merc_gateway_", "merc_grpc_"), "encoder": ("merc_encoder_", "merc_grpc_", "merc_inference_"),
           "fusion": ("merc_fusion_", "merc_inference_")}
    for component, names in served.items():
        merc = {n for n in names if n.startswith("merc_") and n != "merc_serving"}
        assert merc and all(n.startswith(own[component]) for n in merc), (component, sorted(merc))
        assert {"merc_serving", "process_cpu_seconds", "python_gc_objects_collected"} <= names, component
    assert not any(n.startswith("merc_fusion_") for n in served["gateway"] | served["encoder"])
    assert not any(n.startswith(("merc_gateway_", "merc_grpc_", "merc_encoder_")) for n in served["fusion"])
    assert not any(n.startswith("merc_inference_") for n in served["gateway"])
    # Every family is some deployable's: none defined and never served.
    defined = {f.name for v in vars(monitoring).values() if isinstance(v, MetricWrapperBase) for f in v.describe()}
    assert defined == {n for names in served.values() for n in names if n.startswith("merc_")}


def test_event_latency_is_observed_per_emitted_event_by_kind(store):
    """merc_fusion_event_latency_seconds holds the latency_ms each event carries: complete, degraded
    (released at the deadline) and revised (a late modality); an unknown latency (0) is not observed."""
    class Clock:
        now_ms = 1_700_000_000_000

        def __call__(self):
            return self.now_ms

    clock = Clock()
    bus = MemoryBus(partitions=1)
    fusion = FusionProcessor(bus, store, TinyInference(), Settings(join_window_ms=1000, fusion_instance="test"), clock=clock)
    fusion.open()
    send = bus.producer().send
    both = (TEXT, AUDIO)

    def at(e, sent_at_ms):
        e.sent_at_ms = sent_at_ms
        return e.SerializeToString()

    delta = Delta()
    now = clock.now_ms
    send("merc.embeddings.text", b"c", at(embedding(0), now - 40), TENANT_HEADER)                 # complete, 40 ms
    send("merc.embeddings.text", b"c", at(embedding(1, expected=both), now - 200), TENANT_HEADER)  # waits for audio
    send("merc.embeddings.text", b"c", at(embedding(2), 1), TENANT_HEADER)                        # a clock out of range: 0
    assert fusion.step(poll_ms=0) == 1  # 1 and 2 wait behind 1's window
    clock.now_ms += 1000                 # the window passes: 1 degraded, 2 behind it
    assert fusion.step(poll_ms=0) == 2
    clock.now_ms += 500
    send("merc.embeddings.audio", b"c", at(embedding(1, AUDIO, both), now - 100), TENANT_HEADER)  # late: a revision
    assert fusion.step(poll_ms=0) == 1
    fusion.close()

    def observed(kind):
        return (delta("merc_fusion_event_latency_seconds_count", kind=kind),
                round(delta("merc_fusion_event_latency_seconds_sum", kind=kind), 6))

    assert observed("complete") == (1, 0.04)
    assert observed("degraded") == (1, 1.2)
    assert observed("revised") == (1, 1.7)  # from the earliest sent_at of its modalities
    assert delta("merc_fusion_events_total") == 4  # the fourth event's latency is unknown
    assert delta("merc_fusion_event_latency_seconds_bucket", kind="complete", le="0.05") == 1
    assert delta("merc_fusion_event_latency_seconds_bucket", kind="degraded", le="1.0") == 0


def test_serving_gauge_follows_the_health_status():
    server = Server(0, "127.0.0.1")
    server.set_serving(True)
    assert REGISTRY.get_sample_value("merc_serving") == 1
    server.set_serving(False)
    assert REGISTRY.get_sample_value("merc_serving") == 0


def test_the_grafana_dashboard_uses_only_metrics_the_services_export():
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/merc.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = set().union(*map(metric_names.used, exprs))
    assert names and names <= metric_names.exported(), sorted(names - metric_names.exported())
    # ... and every family the services export is on it.
    missing = {metric_names.family(n) for n in metric_names.exported()} - {metric_names.family(n) for n in names}
    assert not missing, sorted(missing)
