"""Acknowledged means on the broker: a record the bus did not accept is never answered OK.

``MemoryBus.refuse`` plays a broker that refuses a topic's records (an authorisation failure, a
record too large, retries exhausted in an outage): the send returns, its delivery fails. Encoders
must answer UNAVAILABLE (the client retries), the gateway must pass that on, and an erasure must
not delete rows whose tombstones are not on the broker. The real broker's refusals and an outage
longer than the delivery timeout: tests/integration/test_kafka_delivery.py, tests/e2e/test_faults.py.
"""

import inspect
from types import SimpleNamespace

import grpc
import pytest

from merc.bus import DeliveryFailed, wait_all
from merc.bus.kafka import EXPIRY_GRACE_S, LINGER_MS, producer_timeouts
from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.gateway.server import GatewayServicer
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import TextPlugin
from merc.runtime import privacy
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from unit.fakes import TinyInference
from unit.test_store import result

SETTINGS = Settings(tenant="t")
TOPIC = SETTINGS.topic("embeddings.text")


def test_a_refused_record_is_not_appended_and_its_delivery_fails():
    bus = MemoryBus(partitions=1)
    producer = bus.producer()
    bus.refuse(TOPIC, "TopicAuthorizationFailedError")
    delivery = producer.send(TOPIC, b"k", b"v")  # like Kafka: the send itself returns
    with pytest.raises(DeliveryFailed, match="TopicAuthorizationFailedError"):
        delivery.wait()
    assert bus.messages(TOPIC) == []
    with pytest.raises(DeliveryFailed):
        wait_all([producer.send("merc.emotions", b"k", b"v"), producer.send(TOPIC, b"k", b"v")])
    assert [m.value for m in bus.messages("merc.emotions")] == [b"v"]  # only that topic is refused
    bus.accept(TOPIC)
    producer.send(TOPIC, b"k", b"v").wait()
    assert [m.value for m in bus.messages(TOPIC)] == [b"v"]


@pytest.fixture
def running(tmp_path):
    """An encoder and a gateway on real in-process gRPC servers, over one in-process bus."""
    bus = MemoryBus(partitions=1)
    store = Store(f"sqlite:///{tmp_path / 'merc.db'}")
    store.migrate()
    encoder = Encoder(TextPlugin(TinyInference(), SETTINGS), bus.producer(), TOPIC, SETTINGS.tenant)
    encoder_server = Server(0)
    encoder_server.add(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")
    encoder_server.start()
    encoder_channel = grpc.insecure_channel(f"127.0.0.1:{encoder_server.port}")
    gateway = GatewayServicer({"text": encoder_pb2_grpc.EncoderServiceStub(encoder_channel)}, store, None, SETTINGS.tenant,
                              producer=bus.producer(), settings=SETTINGS)
    gateway_server = Server(0)
    gateway_server.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, gateway, "merc.v1.GatewayService")
    gateway_server.start()
    gateway_channel = grpc.insecure_channel(f"127.0.0.1:{gateway_server.port}")
    yield SimpleNamespace(bus=bus, store=store, encoder=encoder_pb2_grpc.EncoderServiceStub(encoder_channel),
                          gateway=gateway_pb2_grpc.GatewayServiceStub(gateway_channel))
    for channel in (gateway_channel, encoder_channel):
        channel.close()
    for server in (gateway_server, encoder_server):
        server.grpc.stop(0)
    store.close()


def ref(sequence: int) -> common_pb2.UtteranceRef:
    return common_pb2.UtteranceRef(conversation_id="call-1", sequence=sequence, speaker="a")


def test_an_encoder_answers_unavailable_for_a_record_the_broker_did_not_accept(running):
    running.bus.refuse(TOPIC, "KafkaTimeoutError: Expiring 1 record(s): 10000 ms has passed since batch creation")
    request = encoder_pb2.EncodeRequest(utterance=ref(0), text="Where is my parcel?")
    with pytest.raises(grpc.RpcError) as e:
        running.encoder.Encode(request, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value.details()
    assert "not published" in e.value.details() and "KafkaTimeoutError" in e.value.details()
    assert ("retry-after-ms", "1000") in e.value.trailing_metadata()
    assert running.bus.messages(TOPIC) == []  # nothing done, nothing said to be done
    running.bus.accept(TOPIC)
    assert running.encoder.Encode(request, timeout=30).dimensions > 0  # the client's retry goes through
    assert len(running.bus.messages(TOPIC)) == 1


def test_the_gateway_passes_unavailable_on_when_no_embedding_was_published(running):
    running.bus.refuse(TOPIC)
    request = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref(0), text="Where is my parcel?")
    with pytest.raises(grpc.RpcError) as e:
        running.gateway.AnalyzeUtterance(request, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "MODALITY_TEXT" in e.value.details()
    assert running.bus.messages(TOPIC) == []
    running.bus.accept(TOPIC)
    assert list(running.gateway.AnalyzeUtterance(request, timeout=30).modalities) == [common_pb2.MODALITY_TEXT]


def test_an_erasure_whose_tombstones_the_broker_refused_erases_nothing_and_says_retry(running):
    rows = [result(i) for i in range(3)]
    for r in rows:
        r.conversation_id = "call-1"
    running.store.upsert(rows)
    running.bus.refuse(SETTINGS.topic("emotions"))
    erase = gateway_pb2.EraseConversationRequest(conversation_id="call-1")
    with pytest.raises(grpc.RpcError) as e:
        running.gateway.EraseConversation(erase, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "nothing was erased" in e.value.details()
    assert len(running.store.conversation("t", "call-1")) == 3  # the rows say the conversation is still to erase
    running.bus.accept(SETTINGS.topic("emotions"))
    assert running.gateway.EraseConversation(erase, timeout=30).utterances_deleted == 3
    assert [m.value for m in running.bus.messages(SETTINGS.topic("emotions"))] == [None]


def test_tombstones_return_only_once_the_broker_has_every_one():
    # merc retention publishes through the same function: a refused tombstone fails the job, loudly.
    bus = MemoryBus()
    bus.refuse(SETTINGS.topic("embeddings.vision"))
    with pytest.raises(DeliveryFailed, match="embeddings.vision"):
        privacy.tombstones(bus.producer(), SETTINGS, "t", "c")


@pytest.mark.parametrize("seconds", [1, 3, 10, 120])
def test_the_kafka_producer_gives_up_within_the_delivery_timeout(seconds):
    timeouts = producer_timeouts(seconds)
    assert timeouts["delivery_timeout_ms"] == timeouts["max_block_ms"] == seconds * 1000
    assert LINGER_MS + timeouts["request_timeout_ms"] <= timeouts["delivery_timeout_ms"]  # kafka-python's own rule


def test_an_encoder_answers_before_the_gateway_stops_waiting_for_it():
    gateway_waits_s = inspect.signature(GatewayServicer).parameters["timeout_s"].default
    assert Settings().kafka_delivery_timeout_s + EXPIRY_GRACE_S < gateway_waits_s
