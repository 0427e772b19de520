"""What every MERC gRPC server shares: health checking, graceful shutdown, logging."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from merc.runtime import monitoring
from merc.runtime.config import Settings
from merc.runtime.errors import CatchAll
from merc.runtime.telemetry import JsonFormatter

log = logging.getLogger(__name__)


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Log to stderr (or `stream`) as text, or as JSON lines carrying the current trace and span ids."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class Server:
    """A gRPC server with health checking; TLS when ``credentials`` are given (merc.runtime.security)."""

    def __init__(self, port: int, host: str = "127.0.0.1", workers: int = 8, credentials: grpc.ServerCredentials | None = None,
                 interceptors: Sequence[grpc.ServerInterceptor] = (), max_message_bytes: int = 32 * 1024 * 1024,
                 max_concurrent_rpcs: int = Settings.model_fields["max_concurrent_rpcs"].default, connection_age_s: float = 0) -> None:
        # A message over max_message_bytes is refused (RESOURCE_EXHAUSTED) before it is read whole.
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
        if connection_age_s > 0:
            # GOAWAY after that age; calls still running get as long again to finish.
            age_ms = int(connection_age_s * 1000)
            options += [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", age_ms)]
        # CatchAll innermost: what a servicer did not map is INTERNAL, and the interceptors outside see that code.
        # Calls beyond max_concurrent_rpcs (running, or waiting for one of the workers) are answered
        # RESOURCE_EXHAUSTED at once: without it gRPC queues them, and their messages, without bound.
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), interceptors=[*interceptors, CatchAll()], options=options,
                                maximum_concurrent_rpcs=max_concurrent_rpcs)
        self.health = health.HealthServicer()
        # grpc's servicer answers SERVING for "" from the start; here nothing is SERVING until set_serving(True).
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self.address = f"{host}:{port}"
        if credentials is None:
            self.port = self.grpc.add_insecure_port(self.address)
        else:
            self.port = self.grpc.add_secure_port(self.address, credentials)
        self.stopped = threading.Event()

    def add(self, adder: Callable, servicer, service_name: str) -> None:
        adder(servicer, self.grpc)
        self._service_names = [*getattr(self, "_service_names", []), service_name]

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *getattr(self, "_service_names", [])]:
            self.health.set(name, status)
        monitoring.serving(serving)  # what the probes see, for the NOT_SERVING alert

    def start(self) -> None:
        self.grpc.start()
        log.info("listening on %s", self.address)

    def stop_on_signals(self) -> None:
        """SIGTERM/SIGINT set ``stopped`` (main thread only): before wait() when startup work must be interruptible."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopped.set())

    def wait(self, on_stop: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT, then drain for up to 5 s."""
        self.stop_on_signals()
        self.stopped.wait()
        self.set_serving(False)
        if on_stop:
            on_stop()
        self.grpc.stop(grace=5).wait()
