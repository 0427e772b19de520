"""Slow, oversized and greedy clients on a real in-process gateway: idle streams are closed, open streams
are capped (in all and per tenant) so unary calls keep their threads, oversized messages are refused
before they are read, utterances over a size limit before anything holds or forwards them, each stream
may watch only so many conversations and await only so many events, and every server caps its calls.

No timing is asserted: each test waits on the state it needs (a stream counted open, an event seen),
and deadlines only bound a failure."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merc.bus.memory import MemoryBus
from merc.gateway.hub import EventHub, Inbox
from merc.gateway.limits import _SAMPLE_BYTES, StreamSlots, oversized, streams_per_tenant
from merc.runtime import security
from merc.runtime.config import Settings
from merc.v1 import common_pb2, encoder_pb2, events_pb2, gateway_pb2
from unit.gateway_harness import GUARD_S, TOPIC, FakeEncoder, gateways, pcm, stream, utterance

KEY_A, KEY_B = security.new_key(), security.new_key()
KEYS = f"tenant-a:{security.hash_key(KEY_A)},tenant-b:{security.hash_key(KEY_B)}"


@pytest.fixture
def start(tmp_path):
    """start(**settings) -> Gateway: a gateway on localhost with a text encoder stub, over the memory bus."""
    yield from gateways(tmp_path)


def silent(release: threading.Event):
    """A client that opens a stream and never sends (a slow loris)."""
    release.wait()
    return
    yield


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {GUARD_S} s: {what}"
        time.sleep(0.02)


# ---- streams held open --------------------------------------------------------------------------


def test_idle_streams_are_capped_and_closed_and_unary_calls_still_answer(start):
    g = start()
    release = threading.Event()
    ended = threading.Semaphore(0)

    def hold():
        list(g.stub.StreamConversation(silent(release), timeout=GUARD_S))
        ended.release()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for t in holders:
        t.start()
    wait_until(lambda: g.servicer.slots.open() == 2, "both streams open")
    with pytest.raises(grpc.RpcError) as e:
        list(g.stub.StreamConversation(silent(release), timeout=GUARD_S))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The stuck streams do not starve everyone else.
    with pytest.raises(grpc.RpcError) as e:
        g.stub.GetConversation(gateway_pb2.GetConversationRequest(conversation_id="x"), timeout=GUARD_S)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # Both end while their clients still hold them open: closed by the server, idle.
    for _ in holders:
        assert ended.acquire(timeout=GUARD_S), "an idle stream was not closed by the server"
    release.set()
    for t in holders:
        t.join()
    wait_until(lambda: g.servicer.slots.open() == 0, "the slots are free again")
    list(g.stub.StreamConversation(silent(release), timeout=GUARD_S))  # capacity is back


def test_one_tenant_cannot_take_every_stream(start):
    g = start(api_keys=KEYS, max_streams=4)
    assert g.servicer.slots.per_tenant == 1  # the default with keys: a quarter of max_streams
    release = threading.Event()
    a = ("x-api-key", KEY_A)
    holder = threading.Thread(target=lambda: list(g.stub.StreamConversation(silent(release), timeout=GUARD_S, metadata=(a,))))
    holder.start()
    try:
        wait_until(lambda: g.servicer.slots.open("tenant-a") == 1, "tenant A's stream open")
        with pytest.raises(grpc.RpcError) as e:
            list(g.stub.StreamConversation(silent(release), timeout=GUARD_S, metadata=(a,)))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant" in e.value.details()
        # Tenant B still gets one, while A's is open.
        responses = stream(g, [utterance("b-1", 0)], metadata=(("x-api-key", KEY_B),))
        assert [r.event.utterance.conversation_id for r in responses] == ["b-1"]
        assert g.servicer.slots.open("tenant-a") == 1
    finally:
        release.set()
        holder.join()


def test_streams_per_tenant_default_to_all_with_one_tenant_and_a_quarter_with_keys():
    assert streams_per_tenant(Settings(max_streams=16)) == 16
    assert streams_per_tenant(Settings(max_streams=16, api_keys=KEYS)) == 4
    assert streams_per_tenant(Settings(max_streams=2, api_keys=KEYS)) == 1
    assert streams_per_tenant(Settings(max_streams=16, max_streams_per_tenant=6)) == 6
    slots = StreamSlots(3, 2)
    assert slots.acquire("a") is None and slots.acquire("a") is None
    assert "tenant" in slots.acquire("a")
    assert slots.acquire("b") is None
    assert "too many" in slots.acquire("c")
    slots.release("a")
    assert slots.acquire("c") is None and slots.open() == 3 and slots.open("a") == 1


def test_every_server_refuses_calls_beyond_its_limit_instead_of_queueing(start):
    g = start(max_concurrent_rpcs=1)
    release = threading.Event()
    holder = threading.Thread(target=lambda: list(g.stub.StreamConversation(silent(release), timeout=GUARD_S)))
    holder.start()
    health = health_pb2_grpc.HealthStub(g.channel)
    try:
        wait_until(lambda: g.servicer.slots.open() == 1, "the stream open")
        with pytest.raises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(), timeout=GUARD_S)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        release.set()
        holder.join()

    def answers() -> bool:  # the stream's slot is freed once gRPC has finished the call
        try:
            return health.Check(health_pb2.HealthCheckRequest(), timeout=GUARD_S).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return False

    wait_until(answers, "the server answers again")


def test_the_services_get_the_limit_from_the_settings():
    assert security.server_options(Settings(max_concurrent_rpcs=7))["max_concurrent_rpcs"] == 7
    assert Settings().max_concurrent_rpcs > Settings().max_streams  # streams leave room for other calls


# ---- oversized requests -------------------------------------------------------------------------


def test_an_oversized_message_is_refused_and_the_gateway_stays_healthy(start):
    g = start()
    with pytest.raises(grpc.RpcError) as e:
        g.stub.AnalyzeUtterance(utterance("big", 0, text="x" * (2 * 1024 * 1024)), timeout=GUARD_S)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    health = health_pb2_grpc.HealthStub(g.channel).Check(health_pb2.HealthCheckRequest(), timeout=GUARD_S)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("request_kw, limit", [
    ({"text": "x" * 101}, "MERC_MAX_TEXT_CHARS"),
    ({"text": "", "frames": [encoder_pb2.Image(data=b"x")] * 3}, "MERC_MAX_FRAMES"),
    ({"text": "", "audio": pcm(2.5)}, "MERC_MAX_AUDIO_SECONDS"),
])
def test_an_utterance_over_a_size_limit_is_refused_before_any_encoder_sees_it(start, request_kw, limit):
    g = start(max_text_chars=100, max_frames=2, max_audio_seconds=2.0)
    with pytest.raises(grpc.RpcError) as e:
        g.stub.AnalyzeUtterance(utterance("c", 0, **request_kw), timeout=GUARD_S)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and limit in e.value.details()
    responses = stream(g, [utterance("c", 1, **request_kw), utterance("c", 2)])
    rejected, event = responses[0].rejected, responses[1].event
    assert rejected.code == "INVALID_ARGUMENT" and limit in rejected.reason and rejected.utterance.sequence == 1
    assert event.utterance.sequence == 2
    assert [r.utterance.sequence for r in g.encoder.sent] == [2]  # the oversized ones went nowhere
    assert g.encoder.sent[0].context_text == ""  # and were not remembered as the next one's context


@pytest.mark.parametrize("request_kw, modality, limit", [
    ({"frames": [encoder_pb2.Image(data=b"x")] * 3}, common_pb2.MODALITY_VISION, "MERC_MAX_FRAMES"),
    ({"audio": pcm(2.5)}, common_pb2.MODALITY_AUDIO, "MERC_MAX_AUDIO_SECONDS"),
])
def test_an_oversized_modality_beside_good_text_is_refused_alone_and_the_text_goes_on(start, request_kw, modality, limit):
    g = start(max_frames=2, max_audio_seconds=2.0)
    other = FakeEncoder(g.encoder.bus, publish=False)
    g.servicer.encoders["audio"] = g.servicer.encoders["vision"] = other
    reply = g.stub.AnalyzeUtterance(utterance("c", 0, text="hi", **request_kw), timeout=GUARD_S)
    assert list(reply.modalities) == [common_pb2.MODALITY_TEXT]
    assert [(e.modality, limit in e.reason) for e in reply.errors] == [(modality, True)]
    assert other.sent == [] and [r.text for r in g.encoder.sent] == ["hi"]


def test_an_oversized_text_in_a_stream_is_refused_and_never_remembered_while_the_audio_goes_on(start):
    g = start(max_text_chars=100)
    audio = FakeEncoder(g.encoder.bus, publish=False)
    g.servicer.encoders["audio"] = audio
    stream(g, [utterance("c", 0, text="x" * 101, audio=pcm(1.0)), utterance("c", 1, text="next")])
    assert [r.utterance.sequence for r in audio.sent] == [0]
    assert [(r.utterance.sequence, r.context_text) for r in g.encoder.sent] == [(1, "")]


def test_text_within_the_limit_once_its_spaces_collapse_passes_and_is_held_collapsed(start):
    g = start(max_text_chars=100)
    padded = "so" + " " * 10_000 + "happy"
    stream(g, [utterance("c", 0, text=padded), utterance("c", 1, text="next")])
    first, second = g.encoder.sent
    assert first.text == "so happy" and "so happy" in second.context_text and len(second.context_text) < 100


def test_each_encoder_is_sent_its_own_inputs_only(start):
    g = start()
    audio = FakeEncoder(g.encoder.bus, publish=False)
    g.servicer.encoders["audio"] = audio
    g.stub.AnalyzeUtterance(utterance("c", 0, text="hi", context_text="before", audio=pcm(1.0)), timeout=GUARD_S)
    (text,), (sound,) = g.encoder.sent, audio.sent
    assert (text.text, text.context_text, text.HasField("audio")) == ("hi", "before", False)
    assert (sound.text, sound.context_text, len(sound.audio.data)) == ("", "", 16000)
    assert list(text.expected_modalities) == list(sound.expected_modalities) == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO]


def test_the_gateways_pcm_sizes_are_the_decoders():
    import numpy as np

    from merc import media

    assert _SAMPLE_BYTES == {name: np.dtype(dtype).itemsize for name, (dtype, _) in media.PCM.items()}
    # At the limit exactly it passes, as in the encoder.
    assert oversized(utterance("c", 0, audio=pcm(2.0)), Settings(max_audio_seconds=2.0)) == {}


# ---- what one stream may hold -------------------------------------------------------------------


def test_a_stream_sends_to_at_most_max_stream_conversations(start):
    g = start(max_stream_conversations=2)
    responses = stream(g, [utterance("c1", 0), utterance("c2", 0), utterance("c3", 0), utterance("c1", 1)])
    events = sorted((r.event.utterance.conversation_id, r.event.utterance.sequence) for r in responses if r.HasField("event"))
    rejected = [r.rejected for r in responses if r.HasField("rejected")]
    assert events == [("c1", 0), ("c1", 1), ("c2", 0)]
    assert [(r.utterance.conversation_id, r.code) for r in rejected] == [("c3", "RESOURCE_EXHAUSTED")]
    assert "MERC_MAX_STREAM_CONVERSATIONS" in rejected[0].reason
    assert sorted(r.utterance.conversation_id for r in g.encoder.sent) == ["c1", "c1", "c2"]


def test_a_stream_holds_at_most_max_stream_pending_utterances_awaiting_their_event(start):
    g = start(publish=False, max_stream_pending=2)  # fusion never answers: every accepted utterance stays pending
    responses = stream(g, [utterance("c", i) for i in range(4)])  # ends idle, IDLE_S after the last response
    assert [(r.rejected.utterance.sequence, r.rejected.code) for r in responses] == [(2, "RESOURCE_EXHAUSTED"), (3, "RESOURCE_EXHAUSTED")]
    assert "MERC_MAX_STREAM_PENDING" in responses[0].rejected.reason
    assert [r.utterance.sequence for r in g.encoder.sent] == [0, 1]


def test_a_watcher_that_stops_reading_is_cut_off_and_never_blocks_the_hub():
    bus = MemoryBus()
    hub = EventHub(bus, TOPIC)
    hub.start()
    try:
        stuck, reader = Inbox(maxsize=2), Inbox()
        key = ("default", "c")
        hub.watch(key, stuck)
        hub.watch(key, reader)
        for i in range(5):
            event = events_pb2.EmotionEvent(utterance=common_pb2.UtteranceRef(tenant="default", conversation_id="c", sequence=i))
            bus.producer().send(TOPIC, b"c", event.SerializeToString(), (("tenant", b"default"),))
        # The reader gets all five although the stuck inbox filled after two.
        assert [reader.get(timeout=GUARD_S).utterance.sequence for _ in range(5)] == list(range(5))
        assert stuck.overflowed and stuck.qsize() == 2
    finally:
        hub.stop()
    with pytest.raises(queue.Empty):
        reader.get_nowait()
