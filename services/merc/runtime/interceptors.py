"""What the server interceptors (auth, tracing, metrics) share: health checks pass untouched, handlers are re-wrapped."""

from __future__ import annotations

from collections.abc import Callable

import grpc

# Health checks carry no API key and are neither traced nor counted: probes would drown real calls.
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def wrap_handler(handler: grpc.RpcMethodHandler, wrap: Callable, request_deserializer: Callable | None = None) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour replaced by wrap(behaviour, request_streaming, response_streaming)
    (for server interceptors), and optionally another request deserializer."""
    make = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }
    streaming = (handler.request_streaming, handler.response_streaming)
    factory, behaviour = make[streaming]
    return factory(wrap(behaviour, *streaming), request_deserializer=request_deserializer or handler.request_deserializer,
                   response_serializer=handler.response_serializer)
