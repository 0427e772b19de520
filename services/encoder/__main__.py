"""python -m merc.encoder: serve one modality (MERC_ENCODER_MODALITY)."""

from __future__ import annotations

import logging

from merc.bus import make_bus, topics
from merc.encoder.server import EncoderServicer, warm_up
from merc.inference import make_inference
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import plugin
from merc.runtime import monitoring, security, telemetry
from merc.runtime.config import settings
from merc.runtime.sealing import Sealing
from merc.runtime.serving import Server, setup_logging
from merc.v1 import encoder_pb2_grpc

log = logging.getLogger("merc.encoder")


def main() -> None:
    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    telemetry.setup_tracing(f"merc-encoder-{cfg.encoder_modality}", cfg.otlp_endpoint, cfg.trace_sample_ratio)
    inference = monitoring.ObservedInference(make_inference(cfg))
    bus = make_bus(cfg)
    producer = bus.producer()
    modality = plugin(cfg.encoder_modality, inference, cfg)
    encoder = Encoder(modality, producer, cfg.topic(topics.embeddings(modality.name)), cfg.tenant, cfg.pseudonym_secret,
                      Sealing.parse(cfg.embedding_keys))
    options = security.server_options(cfg)
    # Tracing and metrics outermost: calls the key check refuses are traced and counted too.
    options["interceptors"] = [telemetry.ServerTracing(), monitoring.ServerMetrics(), *options["interceptors"]]
    server = Server(cfg.encoder_port, cfg.bind_host, connection_age_s=cfg.encoder_connection_age_s, **options)
    monitoring.serve("encoder", cfg.metrics_port, cfg.bind_host)
    server.add(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")
    server.start()
    server.stop_on_signals()
    if warm_up(modality, server.stopped):
        server.set_serving(True)
    server.wait(on_stop=producer.close)


if __name__ == "__main__":
    main()
