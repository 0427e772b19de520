"""Slow and oversized clients on a real in-process gateway: idle streams are closed, open streams
are capped so unary calls keep their threads, oversized messages are refused before they are read."""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merc.bus.memory import MemoryBus
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

IDLE_S = 1.0


@pytest.fixture
def gateway(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.migrate()
    hub = EventHub(MemoryBus(), "merc.emotions")
    hub.start()
    server = Server(0, workers=8, max_message_bytes=1024 * 1024)
    servicer = GatewayServicer({}, store, hub, "default", stream_idle_s=IDLE_S, max_streams=2)
    server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, "merc.v1.GatewayService")
    server.start()
    server.set_serving(True)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield gateway_pb2_grpc.GatewayServiceStub(channel), channel
    channel.close()
    server.grpc.stop(0)
    hub.stop()
    store.close()


def silent(release: threading.Event):
    """A client that opens a stream and never sends (a slow loris)."""
    release.wait()
    return
    yield


def test_idle_streams_are_capped_and_closed_and_unary_calls_still_answer(gateway):
    stub, _ = gateway
    release = threading.Event()
    ended: list[float] = []
    started = time.monotonic()

    def hold():
        list(stub.StreamConversation(silent(release), timeout=30))
        ended.append(time.monotonic() - started)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamConversation(silent(release), timeout=5))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The stuck streams do not starve everyone else.
    with pytest.raises(grpc.RpcError) as e:
        stub.GetConversation(gateway_pb2.GetConversationRequest(conversation_id="x"), timeout=2)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for t in holders:
        t.join(timeout=10)
    release.set()
    assert len(ended) == 2 and all(s < IDLE_S + 3 for s in ended), ended  # closed by the server, not the client
    list(stub.StreamConversation(silent(release), timeout=5))  # capacity is back


def test_an_oversized_message_is_refused_and_the_gateway_stays_healthy(gateway):
    stub, channel = gateway
    ref = common_pb2.UtteranceRef(conversation_id="big", sequence=0)
    with pytest.raises(grpc.RpcError) as e:
        stub.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="x" * (2 * 1024 * 1024)), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
