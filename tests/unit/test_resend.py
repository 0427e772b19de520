"""A re-sent utterance (merc.pipeline.resend): what was analysed is not analysed again, and saying so is explicit."""

import json

import grpc
import pytest

from merc.analyze import embedded
from merc.cli import main
from merc.gateway.server import GatewayServicer
from merc.pipeline import resend
from merc.runtime.serving import Server
from merc.store import Store, StoreUnavailable
from merc.v1 import common_pb2, encoder_pb2, gateway_pb2, gateway_pb2_grpc
from unit.fakes import TinyInference
from unit.test_store import result


class RecordingEncoder:
    """An encoder stub that accepts everything and remembers what it was asked to encode."""

    def __init__(self) -> None:
        self.calls: list[encoder_pb2.EncodeRequest] = []

    def Encode(self, request, timeout=None, metadata=()):
        self.calls.append(request)
        return encoder_pb2.EncodeResponse()


class DownStore:
    def analysed(self, *_):
        raise StoreUnavailable("connection refused")


def serve(store, encoders):
    server = Server(0)
    server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, GatewayServicer(encoders, store, None, "t"),
               "merc.v1.GatewayService")
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{server.port}")


@pytest.fixture
def stored(tmp_path):
    """Utterance 3 of conversation c (tenant t) analysed from its text."""
    store = Store(f"sqlite:///{tmp_path / 'merc.db'}")
    store.migrate()
    store.upsert([result(3)])
    return store


@pytest.fixture
def gateway(stored):
    encoders = {"text": RecordingEncoder(), "vision": RecordingEncoder()}
    server, channel = serve(stored, encoders)
    yield gateway_pb2_grpc.GatewayServiceStub(channel), encoders
    channel.close()
    server.grpc.stop(0)


def request(seq: int, text: str = "", frames: int = 0) -> gateway_pb2.AnalyzeUtteranceRequest:
    return gateway_pb2.AnalyzeUtteranceRequest(utterance=common_pb2.UtteranceRef(conversation_id="c", sequence=seq), text=text,
                                               frames=[encoder_pb2.Image(data=b"\xff\xd8") for _ in range(frames)])


def test_changed_text_under_an_analysed_id_is_refused_not_ignored(gateway):
    stub, encoders = gateway
    with pytest.raises(grpc.RpcError) as e:
        stub.AnalyzeUtterance(request(3, "words it never saw"), timeout=10)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "utterance 3 of conversation 'c' was analysed already" in e.value.details()
    assert "new utterance" in e.value.details()
    assert encoders["text"].calls == []  # nothing encoded, nothing published


def test_a_re_send_that_adds_a_modality_goes_through_whole(gateway):
    # Whole: were only the frames sent, a join that has forgotten the utterance would store a result of
    # the frames alone in place of the one with the text (merc.pipeline.resend).
    stub, encoders = gateway
    reply = stub.AnalyzeUtterance(request(3, "the same or not", frames=1), timeout=10)
    assert list(reply.modalities) == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_VISION] and not reply.errors
    assert len(encoders["text"].calls) == 1 and len(encoders["vision"].calls) == 1
    assert list(encoders["vision"].calls[0].expected_modalities) == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_VISION]


def test_nothing_new_compares_with_what_the_stored_result_stands_for():
    stored = result(3)  # text
    assert resend.nothing_new(stored, ["text"])
    assert not resend.nothing_new(stored, ["text", "audio"]) and not resend.nothing_new(None, ["text"])


def test_a_new_utterance_is_analysed_as_ever(gateway):
    stub, encoders = gateway
    reply = stub.AnalyzeUtterance(request(4, "hello"), timeout=10)
    assert list(reply.modalities) == [common_pb2.MODALITY_TEXT] and not reply.errors
    assert len(encoders["text"].calls) == 1


def test_the_check_fails_open_while_the_store_is_down():
    encoders = {"text": RecordingEncoder()}
    server, channel = serve(DownStore(), encoders)
    try:
        reply = gateway_pb2_grpc.GatewayServiceStub(channel).AnalyzeUtterance(request(3, "hello"), timeout=10)
    finally:
        channel.close()
        server.grpc.stop(0)
    assert list(reply.modalities) == [common_pb2.MODALITY_TEXT] and len(encoders["text"].calls) == 1


def test_embedded_mode_keeps_a_db_result_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "LocalInference", lambda *_: TinyInference())
    manifest, db = tmp_path / "m.jsonl", str(tmp_path / "merc.db")
    manifest.write_text(json.dumps({"conversation": "c", "utterance": 0, "text": "hello"}) + "\n")
    assert main(["analyze", str(manifest), "--db", db, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    manifest.write_text(json.dumps({"conversation": "c", "utterance": 0, "text": "something else entirely"}) + "\n")
    assert main(["analyze", str(manifest), "--db", db, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["probs"] == first["probs"] and again["revision"] == first["revision"]
    assert "analysed before" in again["notes"][0] and "new utterance number" in again["notes"][0]


def test_one_utterance_twice_in_a_manifest_is_the_second_lines_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "LocalInference", lambda *_: TinyInference())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"conversation": "c", "utterance": 0, "text": t}) + "\n" for t in ("one", "two")))
    assert main(["analyze", str(manifest), "--json"]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows[0]["label"] is not None
    assert rows[1]["label"] is None and rows[1]["error"] == "line 2: utterance 0 of 'c' is on line 1 already"
