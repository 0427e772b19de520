"""Scaled encoders share the gateway's calls: its channel balances over every address an encoder's
name resolves to (a headless Service in Kubernetes), and encoders close ageing connections so the
gateway re-resolves and finds replicas added later."""

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merc.gateway.__main__ import ENCODER_CHANNEL
from merc.runtime.serving import Server


class Count(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def intercept_service(self, continuation, details):
        with self.lock:
            self.calls += 1
        return continuation(details)


def serving(count: Count, **kwargs) -> Server:
    server = Server(0, interceptors=[count], **kwargs)
    server.start()
    server.set_serving(True)
    return server


def test_the_gateway_spreads_calls_over_every_encoder_address():
    counts = [Count(), Count()]
    servers = [serving(c) for c in counts]
    # One name, two addresses: what DNS answers for a headless Service with two ready replicas.
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
    channel = grpc.insecure_channel(target, options=ENCODER_CHANNEL)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(20):
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert all(c.calls >= 5 for c in counts), [c.calls for c in counts]
    finally:
        channel.close()
        for s in servers:
            s.grpc.stop(None)


def test_an_encoder_closes_connections_past_their_age():
    """GOAWAY at the age: the client's channel leaves READY (and re-resolves) without any call failing."""
    count = Count()
    server = serving(count, connection_age_s=0.5)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=ENCODER_CHANNEL)
    states: list = []
    changed = threading.Condition()

    def watch(state):
        with changed:
            states.append(state)
            changed.notify_all()

    try:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        channel.subscribe(watch)
        with changed:
            assert changed.wait_for(lambda: any(s != grpc.ChannelConnectivity.READY for s in states), timeout=15), states
        # And the next call is served on a new connection.
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert count.calls == 2
    finally:
        channel.close()
        server.grpc.stop(None)
