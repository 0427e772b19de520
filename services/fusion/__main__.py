"""python -m merc.fusion: the fusion/context service."""

from __future__ import annotations

import threading

from merc.bus import make_bus
from merc.inference import make_inference
from merc.pipeline.fusion import FusionProcessor
from merc.runtime import monitoring, security, telemetry
from merc.runtime.config import settings
from merc.runtime.serving import Server, setup_logging
from merc.store import Store


def main() -> None:
    cfg = settings()
    setup_logging(cfg.log_level, cfg.log_format)
    telemetry.setup_tracing("merc-fusion", cfg.otlp_endpoint, cfg.trace_sample_ratio)
    monitoring.serve("fusion", cfg.metrics_port, cfg.bind_host)
    processor = FusionProcessor(make_bus(cfg), Store(cfg.database_url), monitoring.ObservedInference(make_inference(cfg)), cfg)
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, args=(stop,), name="fusion-loop", daemon=True)
    server = Server(cfg.fusion_port, cfg.bind_host, **security.server_options(cfg))
    server.start()
    worker.start()

    def report_health() -> None:
        while not stop.is_set():
            server.set_serving(processor.ready.is_set() and worker.is_alive())
            stop.wait(1.0)

    threading.Thread(target=report_health, daemon=True).start()
    server.wait(on_stop=stop.set)
    worker.join(timeout=10)


if __name__ == "__main__":
    main()
