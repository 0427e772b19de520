"""JSON logs: one object per line, with the trace and span ids of the current span; and what an
Encode logs, even at DEBUG and on its failure paths, never contains the text it encoded."""

from __future__ import annotations

import io
import json
import logging

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.inference import InferenceUnavailable
from merc.inference.local import LocalInference
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import TextPlugin
from merc.runtime import monitoring, telemetry
from merc.runtime.config import Settings
from merc.runtime.serving import Server, setup_logging
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

SECRET_TEXT = "My account number is 4417 1234 5678 9113 and I am furious"


@pytest.fixture
def json_logs(monkeypatch):
    """setup_logging('DEBUG', 'json') into a buffer, on a root logger of our own for the test."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(telemetry, "_provider", None)
    monkeypatch.setattr(telemetry, "_service", "")
    spans = InMemorySpanExporter()
    telemetry.setup_tracing("merc-encoder-text", exporter=spans)
    buf = io.StringIO()
    setup_logging("DEBUG", "json", stream=buf)

    def lines() -> list[dict]:
        return [json.loads(line) for line in buf.getvalue().splitlines()]

    lines.raw = buf.getvalue
    lines.spans = spans
    return lines


def test_a_json_line_carries_the_trace_and_span_ids_of_the_current_span(json_logs):
    log = logging.getLogger("merc.test")
    log.info("outside any span")
    with telemetry.span("work") as s:
        log.warning("inside %s", "a span")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    outside, inside, failed = json_logs()
    ctx = s.get_span_context()
    assert outside["message"] == "outside any span" and "trace_id" not in outside
    assert inside == {"time": inside["time"], "level": "WARNING", "logger": "merc.test", "message": "inside a span",
                      "service": "merc-encoder-text", "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    assert inside["time"].endswith("+00:00")
    assert failed["trace_id"] == inside["trace_id"] and "ValueError: boom" in failed["exception"]


def test_text_format_is_the_default(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    assert not any(isinstance(h.formatter, telemetry.JsonFormatter) for h in root.handlers)
    logging.getLogger("merc.test").info("plain")
    assert buf.getvalue().rstrip().endswith("INFO merc.test plain")


class Unavailable(LocalInference):
    def infer(self, model, inputs):
        raise InferenceUnavailable(f"Triton model {model!r}: connection refused")


@pytest.fixture(scope="module")
def local():
    return LocalInference()


def test_logs_of_an_encode_never_contain_its_text(json_logs, local):
    bus = MemoryBus(partitions=1)
    settings = Settings(tenant="t", max_text_chars=200)
    stubs, servers = [], []
    for inference in (monitoring.ObservedInference(local), monitoring.ObservedInference(Unavailable())):
        encoder = Encoder(TextPlugin(inference, settings), bus.producer(), "merc.embeddings.text", "t")
        server = Server(0, "127.0.0.1", interceptors=[telemetry.ServerTracing(), monitoring.ServerMetrics()])
        server.add(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")
        server.start()
        servers.append(server)
        stubs.append(encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}")))
    ref = common_pb2.UtteranceRef(tenant="t", conversation_id="c", sequence=0, speaker="a")
    codes = []
    try:
        for stub, text in ((stubs[0], SECRET_TEXT), (stubs[0], SECRET_TEXT * 10), (stubs[1], SECRET_TEXT)):
            try:
                stub.Encode(encoder_pb2.EncodeRequest(utterance=ref, text=text, context_text=SECRET_TEXT), timeout=60)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
    finally:
        for server in servers:
            server.grpc.stop(None)
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE]

    raw = json_logs.raw()
    for fragment in (SECRET_TEXT, "4417 1234", "furious"):
        assert fragment not in raw
    lines = json_logs()
    # Not vacuous: each call logged, inside its span.
    access = [line for line in lines if line["logger"] == "merc.runtime.monitoring" and line["message"].startswith("Encode ")]
    assert [line["message"].split()[1] for line in access] == ["OK", "INVALID_ARGUMENT", "UNAVAILABLE"]
    encodes = {f"{s.context.span_id:016x}": s for s in json_logs.spans.get_finished_spans() if s.name.endswith("/Encode")}
    assert all(line["span_id"] in encodes for line in access)
    [warning] = [line for line in lines if line["level"] == "WARNING"]
    assert warning["message"].startswith("inference unavailable") and warning["span_id"] in encodes
