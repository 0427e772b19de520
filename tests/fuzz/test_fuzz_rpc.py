"""Fuzz the gRPC entry points in process, through real gRPC servers so the status codes are real.

EncoderService (one server per plug-in, real models in process, the in-process bus) and
GatewayService.AnalyzeUtterance (wired to those encoders, SQLite, no event hub) get random and
mutated requests. The contract: OK, or INVALID_ARGUMENT with a reason (PERMISSION_DENIED when the
request names a tenant other than the caller's); never UNKNOWN, INTERNAL or UNAVAILABLE (every
encoder is up, so UNAVAILABLE would be an unexpected exception caught by the servicer's last
resort), never a hang; and the servers still answer a valid request after.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given
from hypothesis import strategies as st
from samples import face_png, voice_wav

from fuzz.common import count, fuzz, media_bytes, mutated
from fuzz.seeds import AUDIO_SEEDS, CHANNELS, ENCODINGS, IMAGE_SEEDS, PCM_SEEDS, RATES
from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.gateway.server import GatewayServicer
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import PLUGINS
from merc.pipeline.results import MAX_INT
from merc.runtime import security
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.store import Store
from merc.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    events_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)

pytestmark = [pytest.mark.timeout(900), pytest.mark.filterwarnings("ignore::RuntimeWarning")]

TENANT = "fuzz-tenant"
CALL_TIMEOUT_S = 60.0  # a case slower than this is a hang
ENCODE = "/merc.v1.EncoderService/Encode"
ANALYZE = "/merc.v1.GatewayService/AnalyzeUtterance"
UNDECODABLE = (grpc.StatusCode.INVALID_ARGUMENT, security.UNDECODABLE_MESSAGE)


def _serve(add, servicer):
    """As the services serve: merc.runtime.serving.Server with the production interceptors and limits."""
    server = Server(0, **security.server_options(Settings(inference="local", tenant=TENANT)))
    server.add(add, servicer, "fuzz")
    server.start()
    server.set_serving(True)
    return server.grpc, grpc.insecure_channel(f"127.0.0.1:{server.port}")


@pytest.fixture(scope="module")
def rpc(inference, tmp_path_factory):
    settings = Settings(inference="local", tenant=TENANT)
    bus = MemoryBus(partitions=1)  # one log per topic: bus.messages() is in publishing order
    producer = bus.producer()
    servers, channels, stubs, topics = [], [], {}, {}
    for name, cls in PLUGINS.items():
        topics[name] = settings.topic(f"embeddings.{name}")
        encoder = Encoder(cls(inference, settings), producer, topics[name], settings.tenant)
        server, channel = _serve(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder))
        servers.append(server)
        channels.append(channel)
        stubs[name] = encoder_pb2_grpc.EncoderServiceStub(channel)
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'merc.db'}")
    store.migrate()
    gateway = GatewayServicer(stubs, store, None, TENANT, timeout_s=CALL_TIMEOUT_S)
    server, channel = _serve(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, gateway)
    servers.append(server)
    channels.append(channel)
    yield {"bus": bus, "topics": topics, "encoders": stubs, "channels": dict(zip([*PLUGINS, "gateway"], channels, strict=False)),
           "gateway": gateway_pb2_grpc.GatewayServiceStub(channel)}
    for s in servers:
        s.stop(None)
    for c in channels:
        c.close()
    store.close()


# --- requests -------------------------------------------------------------------------------

def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=max_size)  # protobuf strings are UTF-8


uint32, uint64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
ids = st.one_of(st.just("conv-1"), st.just("conv-1"), st.just(""), texts(20), st.integers(120, 140).map(lambda n: "x" * n))
# Most refs are valid, so most cases reach the media decoders and models; the rest are anything.
valid_refs = st.builds(
    common_pb2.UtteranceRef, tenant=st.sampled_from(["", TENANT]), conversation_id=st.sampled_from(["conv-1", "c2"]),
    sequence=st.integers(0, 50), speaker=st.sampled_from(["", "A", "B"]), start_ms=st.just(0), end_ms=st.integers(0, 10_000),
)
random_refs = st.builds(
    common_pb2.UtteranceRef,
    tenant=st.one_of(st.just(""), st.just(TENANT), ids), conversation_id=ids, sequence=uint32, speaker=st.one_of(st.just("A"), ids),
    start_ms=st.one_of(st.integers(0, 10_000), uint64), end_ms=st.one_of(st.just(0), st.integers(0, 10_000), uint64),
)
refs = st.one_of(valid_refs, valid_refs, valid_refs, random_refs)
text = st.one_of(st.just(""), st.just("Great job."), st.sampled_from([" ", "\n\t ", "\u200b", "\x00"]), texts(300),
                 st.integers(1990, 2010).map(lambda n: "é" * n))
context_text = st.one_of(st.just(""), texts(100), st.just("context " * 600))
container_audio = st.builds(encoder_pb2.Audio, data=media_bytes(*AUDIO_SEEDS), encoding=st.just(""), sample_rate=RATES,
                            channels=CHANNELS)
audio = st.one_of(
    st.none(), container_audio, container_audio,
    st.builds(encoder_pb2.Audio, data=media_bytes(*AUDIO_SEEDS), encoding=ENCODINGS, sample_rate=RATES, channels=CHANNELS),
    st.builds(encoder_pb2.Audio, data=st.one_of(st.binary(max_size=2048), st.sampled_from(PCM_SEEDS).flatmap(mutated)),
              encoding=ENCODINGS, sample_rate=RATES, channels=CHANNELS),
)
FACE = encoder_pb2.Image(data=face_png())
images = st.builds(encoder_pb2.Image, data=media_bytes(*IMAGE_SEEDS))
image_lists = st.one_of(st.just([]), st.just([FACE]), st.lists(images, max_size=3), st.lists(images, max_size=3),
                        st.integers(31, 34).map(lambda n: [FACE] * n))  # around MERC_MAX_FRAMES (32)
modalities = st.lists(st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1)), max_size=4)

encode_requests = st.builds(
    encoder_pb2.EncodeRequest, utterance=refs, text=text, context_text=context_text, audio=audio,
    frames=image_lists, faces=image_lists, expected_modalities=modalities, sent_at_ms=uint64,
)
analyze_requests = st.builds(
    gateway_pb2.AnalyzeUtteranceRequest, utterance=refs, text=text, context_text=context_text, audio=audio,
    frames=image_lists, faces=image_lists,
)

VALID = encoder_pb2.EncodeRequest(
    utterance=common_pb2.UtteranceRef(conversation_id="alive", sequence=1, speaker="A"),
    text="I am still here.", audio=encoder_pb2.Audio(data=voice_wav(seconds=0.5)), faces=[FACE],
)


# --- checks ---------------------------------------------------------------------------------

def check_encode(rpc, name: str, request: encoder_pb2.EncodeRequest, call) -> str:
    """One Encode call (``call`` sends it): the status contract, and what it published."""
    plugin = PLUGINS[name]
    before = len(rpc["bus"].messages(rpc["topics"][name]))
    foreign = request.utterance.tenant not in ("", TENANT)
    try:
        response = call()
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.PERMISSION_DENIED:
            assert foreign, f"{name} encoder: {e.details()}"
        else:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{name} encoder: {e.code()}: {e.details()}"
        assert e.details() and e.details().strip()
        assert len(rpc["bus"].messages(rpc["topics"][name])) == before, "a rejected request published an embedding"
        return "rejected"
    assert not foreign, f"{name} encoder accepted tenant {request.utterance.tenant!r}"
    if isinstance(response, bytes):
        response = encoder_pb2.EncodeResponse.FromString(response)
    assert response.modality == plugin.modality and response.encoder_model == plugin.model and response.dimensions > 0
    published = rpc["bus"].messages(rpc["topics"][name])[before:]
    assert len(published) == 1
    embedding = events_pb2.ModalityEmbedding.FromString(published[0].value)
    assert embedding.utterance.conversation_id == request.utterance.conversation_id
    assert embedding.utterance.tenant == (request.utterance.tenant or TENANT)
    assert embedding.modality == plugin.modality and len(embedding.vector) == response.dimensions
    ref = embedding.utterance  # what the store's INTEGER (32-bit) and text columns in PostgreSQL can hold
    assert max(ref.sequence, ref.start_ms, ref.end_ms) <= MAX_INT, f"{name} accepted {ref}"
    assert "\x00" not in ref.conversation_id + ref.tenant, f"{name} accepted {ref}"
    assert all(math.isfinite(v) for v in embedding.vector), f"{name}: non-finite embedding"
    q = embedding.quality
    assert all(math.isfinite(getattr(q, f.name)) for f in q.DESCRIPTOR.fields), f"{name}: non-finite quality {q}"
    return "encoded"


def assert_alive(rpc) -> None:
    for name, stub in rpc["encoders"].items():
        assert stub.Encode(VALID, timeout=CALL_TIMEOUT_S).dimensions > 0, name
    analyze = gateway_pb2.AnalyzeUtteranceRequest(utterance=VALID.utterance, text=VALID.text, audio=VALID.audio,
                                                  faces=VALID.faces)
    assert len(rpc["gateway"].AnalyzeUtterance(analyze, timeout=CALL_TIMEOUT_S).modalities) == 3


# --- tests ----------------------------------------------------------------------------------

def _pcm(samples) -> encoder_pb2.Audio:
    return encoder_pb2.Audio(data=np.asarray(samples, "<f4").tobytes(), encoding="pcm_f32le", sample_rate=16_000, channels=1)


CLICK = np.zeros(16_000, np.float32)
CLICK[:80] = 0.9  # 5 ms of sound, then silence: trimming leaves 0.11 s


def test_encoders(rpc):
    @fuzz(350)
    @given(request=encode_requests)
    # Regressions: audio under 0.15 s, or that trimming its silence cut below that, made the audio
    # model's pooling fail (RuntimeError: "Output size is too small") -> UNAVAILABLE.
    @example(request=encoder_pb2.EncodeRequest(utterance=VALID.utterance, audio=_pcm(np.full(100, 0.1))))
    @example(request=encoder_pb2.EncodeRequest(utterance=VALID.utterance, audio=_pcm(CLICK)))
    # Regression: an end_ms (or start_ms, sequence) the store cannot hold was published, and the
    # fusion service's write of the row then failed at every replay.
    @example(request=encoder_pb2.EncodeRequest(
        utterance=common_pb2.UtteranceRef(conversation_id="c", start_ms=1, end_ms=2**63), text="Hi.", faces=[FACE],
        audio=VALID.audio))
    @example(request=encoder_pb2.EncodeRequest(utterance=common_pb2.UtteranceRef(conversation_id="c\x00"), text="Hi.",
                                               faces=[FACE], audio=VALID.audio))
    def run(request):
        for name, stub in rpc["encoders"].items():
            outcome = check_encode(rpc, name, request, lambda stub=stub: stub.Encode(request, timeout=CALL_TIMEOUT_S))
            count(f"encoder[{name}].Encode", outcome)

    run()
    assert_alive(rpc)


def waves() -> st.SearchStrategy[np.ndarray]:
    """Valid 16 kHz clips of any length and loudness, silence, clicks and tones."""

    def build(t):
        n, seed, noise, tone, clicks = t
        rng = np.random.default_rng(seed)
        w = noise * rng.standard_normal(n)
        if tone:
            w += tone * np.sin(2 * np.pi * rng.uniform(80, 4000) * np.arange(n) / 16_000)
        for at, width in clicks:
            w[at % n : at % n + width] = 0.9
        return np.clip(w, -1, 1).astype(np.float32)

    return st.tuples(st.one_of(st.integers(1, 3000), st.integers(1, 48_000)), st.integers(0, 2**32 - 1),
                     st.sampled_from([0.0, 1e-6, 0.01, 0.5]), st.sampled_from([0.0, 0.0, 0.001, 0.3, 1.0]),
                     st.lists(st.tuples(st.integers(0, 48_000), st.integers(1, 400)), max_size=3)).map(build)


def test_audio_plugin_encodes_any_valid_clip(inference):
    """Whatever a valid clip holds, the audio path (quality signals, trimming, the model) gives a
    finite embedding: a model failure here is an UNAVAILABLE at the service."""
    plugin = PLUGINS["audio"](inference, Settings(inference="local"))

    @fuzz(150)
    @given(wave=waves())
    @example(wave=CLICK)  # regression: trimming left 0.11 s, the model's pooling failed
    @example(wave=np.full(1, 0.5, np.float32))
    def run(wave):
        encoded = plugin.encode(encoder_pb2.EncodeRequest(audio=_pcm(wave)))
        assert encoded.vector.ndim == 1 and encoded.vector.size > 0 and np.isfinite(encoded.vector).all()
        q = encoded.quality
        assert all(math.isfinite(getattr(q, f.name)) for f in q.DESCRIPTOR.fields), q
        count("encoder[audio] valid clips", "encoded")

    run()


VALID_BYTES = VALID.SerializeToString()
garbage = st.one_of(st.binary(max_size=512), mutated(VALID_BYTES), mutated(VALID_BYTES))


def test_encoders_raw_bytes(rpc):
    """Bytes that are no EncodeRequest get INVALID_ARGUMENT (the server's interceptor turns a failed
    deserialisation into it; bare grpc would answer INTERNAL); bytes that parse get the usual contract."""

    @fuzz(150)
    @given(data=garbage)
    def run(data):
        try:
            request = encoder_pb2.EncodeRequest.FromString(data)
        except DecodeError:
            request = None
        for name in PLUGINS:
            call = rpc["channels"][name].unary_unary(ENCODE)  # no serializers: the bytes go as they are
            if request is None:
                with pytest.raises(grpc.RpcError) as raised:
                    call(data, timeout=CALL_TIMEOUT_S)
                assert (raised.value.code(), raised.value.details()) == UNDECODABLE
                count(f"encoder[{name}].Encode[bytes]", "undecodable")
            else:
                count(f"encoder[{name}].Encode[bytes]", check_encode(rpc, name, request, lambda call=call: call(data, timeout=CALL_TIMEOUT_S)))

    run()
    assert_alive(rpc)


def check_analyze(request: gateway_pb2.AnalyzeUtteranceRequest, call) -> str:
    given_ = set()
    if request.text.strip():
        given_.add(common_pb2.MODALITY_TEXT)
    if request.HasField("audio") and request.audio.data:
        given_.add(common_pb2.MODALITY_AUDIO)
    if request.frames or request.faces:
        given_.add(common_pb2.MODALITY_VISION)
    foreign = request.utterance.tenant not in ("", TENANT)
    try:
        response = call()
    except grpc.RpcError as e:
        # The gateway fails a call that no encoder took with the most telling of their codes.
        allowed = {grpc.StatusCode.INVALID_ARGUMENT} | ({grpc.StatusCode.PERMISSION_DENIED} if foreign else set())
        assert e.code() in allowed, f"gateway: {e.code()}: {e.details()}"
        assert e.details() and e.details().strip()
        return "rejected"
    if isinstance(response, bytes):
        response = gateway_pb2.AnalyzeUtteranceResponse.FromString(response)
    assert request.utterance.conversation_id and given_
    encoded = set(response.modalities)
    failed = {e.modality for e in response.errors}
    assert encoded and not encoded & failed and encoded | failed == given_
    assert all(e.reason.strip() for e in response.errors)
    assert response.utterance.tenant == (request.utterance.tenant or TENANT)
    return "ok" if not failed else "partial"


def test_gateway_analyze_utterance(rpc):
    @fuzz(150)
    @given(request=analyze_requests)
    def run(request):
        count("gateway.AnalyzeUtterance", check_analyze(request, lambda: rpc["gateway"].AnalyzeUtterance(request, timeout=CALL_TIMEOUT_S)))

    run()
    assert_alive(rpc)


ANALYZE_BYTES = gateway_pb2.AnalyzeUtteranceRequest(utterance=VALID.utterance, text=VALID.text, faces=[FACE]).SerializeToString()


def test_gateway_raw_bytes(rpc):
    @fuzz(100)
    @given(data=st.one_of(st.binary(max_size=512), mutated(ANALYZE_BYTES), mutated(ANALYZE_BYTES)))
    def run(data):
        call = rpc["channels"]["gateway"].unary_unary(ANALYZE)
        try:
            request = gateway_pb2.AnalyzeUtteranceRequest.FromString(data)
        except DecodeError:
            with pytest.raises(grpc.RpcError) as raised:
                call(data, timeout=CALL_TIMEOUT_S)
            assert (raised.value.code(), raised.value.details()) == UNDECODABLE
            count("gateway.AnalyzeUtterance[bytes]", "undecodable")
            return
        count("gateway.AnalyzeUtterance[bytes]", check_analyze(request, lambda: call(data, timeout=CALL_TIMEOUT_S)))

    run()
    assert_alive(rpc)
