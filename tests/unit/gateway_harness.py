"""An in-process gateway over the memory bus with encoder stubs: what the gateway's unit tests drive."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from merc.bus.memory import MemoryBus
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.runtime import security
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import common_pb2, encoder_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

IDLE_S = 1.0
TOPIC = "merc.emotions"
GUARD_S = 60  # bounds a failure only; nothing here is expected to take more than a fraction of it


class FakeEncoder:
    """An encoder stub: records what it was sent and, like the fusion service would, publishes each
    utterance's event unless told to hold them (a slow fusion)."""

    def __init__(self, bus: MemoryBus, publish: bool = True) -> None:
        self.bus, self.publish = bus, publish
        self.sent: list[encoder_pb2.EncodeRequest] = []

    def Encode(self, request, timeout=None, metadata=()):  # the stub's signature
        self.sent.append(request)
        if self.publish:
            event = events_pb2.EmotionEvent(utterance=request.utterance)
            self.bus.producer().send(TOPIC, request.utterance.conversation_id.encode(), event.SerializeToString(),
                                     (("tenant", request.utterance.tenant.encode()),))
        return encoder_pb2.EncodeResponse()


@dataclass
class Gateway:
    stub: gateway_pb2_grpc.GatewayServiceStub
    channel: grpc.Channel
    servicer: GatewayServicer
    encoder: FakeEncoder
    server: Server


def gateways(tmp_path):
    """The body of a ``start`` fixture: yields start(**settings) -> Gateway, a gateway on localhost with a text
    encoder stub, over the memory bus; stops what it started."""
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.migrate()
    bus = MemoryBus()
    hub = EventHub(bus, TOPIC)
    hub.start()
    made: list[Gateway] = []

    def start(publish: bool = True, workers: int = 8, max_concurrent_rpcs: int = 64, **settings) -> Gateway:
        cfg = Settings(**{"stream_idle_s": IDLE_S, "max_streams": 2, "max_message_bytes": 1024 * 1024, **settings})
        server = Server(0, workers=workers, max_message_bytes=cfg.max_message_bytes, max_concurrent_rpcs=max_concurrent_rpcs,
                        interceptors=security.interceptors(cfg))
        encoder = FakeEncoder(bus, publish)
        servicer = GatewayServicer({"text": encoder}, store, hub, cfg.tenant, stream_idle_s=cfg.stream_idle_s, settings=cfg)
        server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, "merc.v1.GatewayService")
        server.start()
        server.set_serving(True)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        made.append(Gateway(gateway_pb2_grpc.GatewayServiceStub(channel), channel, servicer, encoder, server))
        return made[-1]

    yield start
    for g in made:
        g.channel.close()
        g.server.grpc.stop(0)
    hub.stop()
    store.close()


def utterance(conversation: str, sequence: int, text: str = "hello", **kw) -> gateway_pb2.AnalyzeUtteranceRequest:
    return gateway_pb2.AnalyzeUtteranceRequest(utterance=common_pb2.UtteranceRef(conversation_id=conversation, sequence=sequence),
                                               text=text, **kw)


def stream(g: Gateway, requests, metadata=()) -> list[gateway_pb2.StreamConversationResponse]:
    wrapped = (gateway_pb2.StreamConversationRequest(utterance=u) for u in requests)
    return list(g.stub.StreamConversation(wrapped, timeout=GUARD_S, metadata=metadata))


def pcm(seconds: float, rate: int = 8000) -> encoder_pb2.Audio:
    return encoder_pb2.Audio(data=b"\0\0" * int(seconds * rate), encoding="pcm_s16le", sample_rate=rate, channels=1)
