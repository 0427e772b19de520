"""Each encoder plug-in's warm-up input runs its whole path, and the service turns SERVING only after it."""

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merc.encoder.server import warm_up
from merc.inference import InferenceUnavailable
from merc.inference.local import LocalInference
from merc.pipeline.modalities import PLUGINS
from merc.runtime.config import Settings
from merc.runtime.serving import Server


@pytest.fixture(scope="module")
def inference():
    return LocalInference(None, 1)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_warmup_request_encodes(inference, name):
    plugin = PLUGINS[name](inference, Settings(inference="local"))
    request = plugin.warmup_request()
    assert plugin.has_input(request)
    encoded = plugin.encode(request)
    assert encoded.vector.ndim == 1 and encoded.vector.size > 0


class FlakyInference(LocalInference):
    """The real local models behind a backend that is unreachable for the first ``down`` calls."""

    def __init__(self, down: int) -> None:
        super().__init__(None, 1)
        self.down, self.calls = down, 0

    def infer(self, model, inputs):
        self.calls += 1
        if self.calls <= self.down:
            raise InferenceUnavailable(f"{model}: connection refused")
        return super().infer(model, inputs)


def health(server: Server) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_a_server_is_not_serving_until_it_says_so():
    # grpc's own health servicer answers SERVING for "" from the start, before any warm-up.
    server = Server(0)
    server.start()
    try:
        assert health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        server.set_serving(True)
        assert health(server) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.grpc.stop(0)


def test_warm_up_retries_until_the_backend_answers():
    inference = FlakyInference(down=3)
    plugin = PLUGINS["text"](inference, Settings(inference="local"))
    assert warm_up(plugin, threading.Event(), first_delay_s=0.01, max_delay_s=0.02)
    assert inference.calls > 3


def test_warm_up_gives_up_when_stopped():
    inference = FlakyInference(down=10**9)
    plugin = PLUGINS["text"](inference, Settings(inference="local"))
    stopped = threading.Event()
    threading.Timer(0.2, stopped.set).start()
    assert not warm_up(plugin, stopped, first_delay_s=0.01, max_delay_s=0.05)
    assert inference.calls >= 2
