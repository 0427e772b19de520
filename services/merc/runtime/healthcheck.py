"""python -m merc.runtime.healthcheck HOST:PORT [SERVICE]: exit 0 when the gRPC health check says SERVING."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout_s: float = 2.0) -> bool:
    """Health checks need no API key; over TLS when MERC_TLS_CA_FILE is set."""
    from merc.runtime import security
    from merc.runtime.config import Settings

    with security.channel(target, Settings()) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    sys.exit(0 if check(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "") else 1)
