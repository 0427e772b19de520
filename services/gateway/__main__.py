"""python -m merc.gateway: the front door."""

from __future__ import annotations

import grpc

from merc.bus import make_bus, topics
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.gateway.web import serve as serve_web
from merc.runtime import monitoring, security, telemetry
from merc.runtime.config import settings
from merc.runtime.serving import Server, setup_logging
from merc.store import Store
from merc.v1 import encoder_pb2_grpc, gateway_pb2_grpc

# gRPC's reconnect backoff grows to 2 minutes by default: an encoder back from a restart would sit
# unused that long, its modality missing from every event. Retry the connection every second.
# Round robin over every address of an encoder's name (gRPC's default, pick_first, sends every
# call to one replica however many are scaled up).
ENCODER_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.min_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.lb_policy_name", "round_robin")]


def main() -> None:
    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    telemetry.setup_tracing("merc-gateway", cfg.otlp_endpoint, cfg.trace_sample_ratio)
    urls = {"text": cfg.text_encoder_url, "audio": cfg.audio_encoder_url, "vision": cfg.vision_encoder_url}
    channels = {m: grpc.intercept_channel(security.channel(url, cfg, ENCODER_CHANNEL), telemetry.ClientTracing(), monitoring.FanoutMetrics(m))
                for m, url in urls.items() if url}
    encoders = {m: encoder_pb2_grpc.EncoderServiceStub(channel) for m, channel in channels.items()}
    bus = make_bus(cfg)
    hub = EventHub(bus, cfg.topic(topics.EMOTIONS))
    hub.start()
    producer = bus.producer()  # erasure tombstones
    store = Store(cfg.database_url)
    servicer = GatewayServicer(encoders, store, hub, cfg.tenant, stream_idle_s=cfg.stream_idle_s,
                               producer=producer, settings=cfg, max_streams=cfg.max_streams)
    options = security.server_options(cfg)
    # Tracing and metrics outermost: calls the key check refuses are traced and counted too.
    options["interceptors"] = [telemetry.ServerTracing(), monitoring.ServerMetrics(), *options["interceptors"]]
    server = Server(cfg.gateway_port, cfg.bind_host, **options)
    monitoring.serve("gateway", cfg.metrics_port, cfg.bind_host)
    server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, "merc.v1.GatewayService")
    server.start()
    web = serve_web(store, hub, cfg)  # the timeline page on MERC_HTTP_PORT (0 = off)
    server.set_serving(True)
    server.wait(on_stop=lambda: (web and web.stop(), hub.stop(), producer.close()))


if __name__ == "__main__":
    main()
