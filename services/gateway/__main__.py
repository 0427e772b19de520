"""python -m merc.gateway: the front door."""

from __future__ import annotations

import grpc

from merc.bus import make_bus
from merc.config import settings
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.serving import Server, setup_logging
from merc.store import Store
from merc.v1 import encoder_pb2_grpc, gateway_pb2_grpc


# gRPC's reconnect backoff grows to 2 minutes by default: an encoder back from a restart would sit
# unused that long, its modality missing from every event. Retry the connection every second.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 1000)]


def main() -> None:
    cfg = settings()
    setup_logging(cfg.log_level)
    urls = {"text": cfg.text_encoder_url, "audio": cfg.audio_encoder_url, "vision": cfg.vision_encoder_url}
    encoders = {m: encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(url, options=RECONNECT)) for m, url in urls.items() if url}
    hub = EventHub(make_bus(cfg), cfg.topic("emotions"))
    hub.start()
    servicer = GatewayServicer(encoders, Store(cfg.database_url), hub, cfg.tenant)
    server = Server(cfg.gateway_port, cfg.bind_host)
    server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, "merc.v1.GatewayService")
    server.start()
    server.set_serving(True)
    server.wait(on_stop=hub.stop)


if __name__ == "__main__":
    main()
