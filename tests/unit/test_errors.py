"""What a caller is told when a call fails: the reason without the process's insides (merc.runtime.errors),
and an exception no servicer mapped answered INTERNAL with a generic message, on a real gRPC server."""

import logging

import grpc
import numpy as np
import pytest

from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import Encoded, InvalidInput, TextPlugin
from merc.runtime import errors
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from unit.fakes import TinyInference

SECRET = "my card number is 4417 1234"


def test_object_reprs_lose_their_addresses():
    thing, fn = object(), (lambda: 0)
    message = errors.public_message(f"cannot use {thing!r} from {fn!r}; id=0x{id(thing):x}")
    assert "0x" + f"{id(thing):x}" not in message and f"{id(fn):x}" not in message
    assert message == "cannot use <object object> from <function test_object_reprs_lose_their_addresses.<locals>.<lambda>>; id=0x..."
    assert errors.public_message("frame 0x1f is short") == "frame 0x1f is short"  # short hex is not an address


def test_messages_are_one_line_and_capped():
    message = errors.public_message("first\nsecond\t third " + "x" * 2000)
    assert message.startswith("first second third ") and len(message) == errors.MAX_MESSAGE_CHARS and message.endswith("...")


class Plugin(TextPlugin):
    """A text plug-in that fails as told."""

    failure: Exception | None = None

    def encode(self, request):
        if self.failure is not None:
            raise self.failure
        return Encoded(np.ones(4, np.float32), common_pb2.QualitySignals(), self.model, "1")


@pytest.fixture
def encoder():
    settings = Settings(tenant="t")
    plugin = Plugin(TinyInference(), settings)
    server = Server(0)
    server.add(encoder_pb2_grpc.add_EncoderServiceServicer_to_server,
               EncoderServicer(Encoder(plugin, MemoryBus().producer(), "merc.embeddings.text", "t")), "merc.v1.EncoderService")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield plugin, encoder_pb2_grpc.EncoderServiceStub(channel)
    channel.close()
    server.grpc.stop(0)


def encode(stub):
    ref = common_pb2.UtteranceRef(conversation_id="c", sequence=0)
    with pytest.raises(grpc.RpcError) as e:
        stub.Encode(encoder_pb2.EncodeRequest(utterance=ref, text=SECRET), timeout=30)
    return e.value


def test_an_unexpected_exception_is_internal_with_a_generic_message_and_logged_without_its_text(encoder, caplog):
    plugin, stub = encoder
    plugin.failure = RuntimeError(f"{SECRET} broke {object()!r}")
    with caplog.at_level(logging.ERROR, logger="merc.runtime.errors"):
        e = encode(stub)
    assert e.code() == grpc.StatusCode.INTERNAL and e.details() == errors.INTERNAL_MESSAGE
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "/merc.v1.EncoderService/Encode" in logged and "encode" in logged  # where, not what
    assert SECRET not in logged and " at 0x" not in logged


def test_mapped_errors_keep_their_status_and_lose_addresses(encoder):
    plugin, stub = encoder
    plugin.failure = InvalidInput(f"cannot decode the image: {object()!r}")
    e = encode(stub)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details() == "cannot decode the image: <object object>"


def boom(_request, _context):
    yield b"one"
    raise ValueError(f"{SECRET} <Frame at 0x7f3a2b1c0d0e>")


def test_a_response_stream_that_fails_unexpectedly_ends_internal():
    server = Server(0)
    handler = grpc.method_handlers_generic_handler("test.Boom", {"Stream": grpc.unary_stream_rpc_method_handler(boom)})
    server.add(lambda _servicer, s: s.add_generic_rpc_handlers((handler,)), None, "test.Boom")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        responses = channel.unary_stream("/test.Boom/Stream")(b"", timeout=30)
        assert next(responses) == b"one"
        with pytest.raises(grpc.RpcError) as e:
            next(responses)
        assert e.value.code() == grpc.StatusCode.INTERNAL and e.value.details() == errors.INTERNAL_MESSAGE
    finally:
        channel.close()
        server.grpc.stop(0)
