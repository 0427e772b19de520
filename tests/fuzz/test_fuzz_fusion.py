"""Fuzz the fusion processor's input: whatever lands on the embedding topics.

Random bytes, mutated valid ModalityEmbeddings and structurally valid ones with odd values
(wrong vector lengths, NaN/inf, odd refs) go through one FusionProcessor.step over the in-process
bus, the real fusion model and SQLite. The contract: step never raises; each poison record goes
to merc.dlq unchanged, with a ``reason`` and its ``source`` topic; each valid record's utterance
gets exactly one event, with probabilities that are a distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from fuzz.common import count, fuzz, mutated
from merc.bus.memory import MemoryBus
from merc.bus.topics import EMBEDDINGS as EMBEDDING_TOPICS
from merc.pipeline import state_size
from merc.pipeline.fusion import FusionProcessor
from merc.runtime.config import Settings
from merc.store import Store
from merc.v1 import common_pb2, events_pb2

pytestmark = [pytest.mark.timeout(900), pytest.mark.filterwarnings("ignore::RuntimeWarning")]

MODALITIES = {common_pb2.MODALITY_TEXT: "text", common_pb2.MODALITY_AUDIO: "audio", common_pb2.MODALITY_VISION: "vision"}
TENANT = "t"
TEXT_DIM = 384


@pytest.fixture(scope="module")
def fusion(inference, tmp_path_factory):
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('fusion') / 'merc.db'}")
    store.migrate()
    # A zero join window: every utterance is released in the step that brought it.
    settings = Settings(inference="local", join_window_ms=0, fusion_instance="fuzz", tenant=TENANT)
    dims = FusionProcessor(MemoryBus(partitions=1), store, inference, settings).predictor.dims
    yield store, settings, dims
    store.close()


def vectors(size: int) -> st.SearchStrategy[list[float]]:
    """A random float32 vector (drawn from a seed: cheap at any size) with a few odd values."""
    odd = st.sampled_from([math.nan, math.inf, -math.inf, 3.4e38, -0.0])

    def build(t):
        seed, scale, spikes = t
        v = np.random.default_rng(seed).normal(size=size).astype(np.float32) * np.float32(scale)
        for i, x in spikes:
            v[i % size] = x
        return v.tolist()

    return st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([1.0, 1.0, 1e-30, 1e3, 1e30]),
                     st.lists(st.tuples(st.integers(0, size - 1), odd), max_size=2)).map(build)


def embeddings(dims: dict[str, int]):
    def vector_for(modality: int):
        right = dims.get(MODALITIES.get(modality, "text"), 8)
        return st.one_of(vectors(right), vectors(right), st.integers(0, 3 * right).flatmap(
            lambda n: st.just([]) if n == 0 else vectors(n)))

    floats = st.floats(width=32)
    quality = st.builds(common_pb2.QualitySignals, text_length=st.integers(0, 2**32 - 1), voiced_ratio=floats, snr_db=floats,
                        clipping_ratio=floats, face_found_ratio=floats, detector_score=floats, sharpness=floats)
    ref = st.builds(common_pb2.UtteranceRef, tenant=st.sampled_from(["", TENANT, TENANT, "other", "t" * 65]),
                    conversation_id=st.sampled_from(["", "c1", "c2", "c\x00", "ü" * 200, "ü" * 128]),
                    sequence=st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1)),
                    speaker=st.sampled_from(["", "A", "B", "\x00", "s" * 129]),
                    start_ms=st.one_of(st.integers(0, 10_000), st.integers(0, 2**64 - 1)),
                    end_ms=st.one_of(st.integers(0, 10_000), st.integers(0, 2**64 - 1)))
    # Modalities the join knows, MODALITY_UNSPECIFIED, and others (proto3 enums are open).
    modality = st.integers(0, 5)
    return modality.flatmap(lambda m: st.builds(
        events_pb2.ModalityEmbedding, utterance=ref, modality=st.just(m), vector=vector_for(m), quality=quality,
        expected_modalities=st.lists(st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1)), max_size=4),
        encoder_model=st.sampled_from(["", "text_encoder", "m" * 5000]), encoder_version=st.text(max_size=5), sent_at_ms=st.integers(0, 2**64 - 1)))


def records(dims):
    """(topic suffix, key, value, headers) as the encoders' producers would send them, or not."""
    valid = events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant=TENANT, conversation_id="c1", sequence=1, speaker="A"),
        modality=common_pb2.MODALITY_TEXT, vector=[0.1] * dims["text"], expected_modalities=[common_pb2.MODALITY_TEXT],
    ).SerializeToString()
    structured = embeddings(dims).map(lambda e: e.SerializeToString())
    value = st.one_of(st.binary(max_size=300), mutated(valid), mutated(valid), structured, structured, structured)
    headers = st.one_of(st.just((("schema", b"merc.v1.ModalityEmbedding"), ("tenant", TENANT.encode()))),
                        st.lists(st.tuples(st.sampled_from(["schema", "tenant", "x"]), st.binary(max_size=8)), max_size=3).map(tuple))
    return st.tuples(st.sampled_from(EMBEDDING_TOPICS), st.one_of(st.just(b"c1"), st.binary(max_size=8)), value, headers)


def expected(value: bytes, headers, dims: dict[str, int]) -> tuple[str, events_pb2.ModalityEmbedding | None]:
    """What the processor must make of a record: ("poison", None) or ("valid", embedding)."""
    try:
        e = events_pb2.ModalityEmbedding.FromString(value)
    except DecodeError:
        return "poison", None
    if not e.utterance.conversation_id or not e.vector or e.modality not in MODALITIES or known_bug(value):
        return "poison", None
    if store_refuses(e.utterance) or tenant_header(headers) != e.utterance.tenant.encode():
        return "poison", None
    if len(e.vector) != dims[MODALITIES[e.modality]]:
        return "poison", None  # it once became an event with no modalities at all
    if len(value) > state_size.max_embedding_bytes(MODALITIES[e.modality], len(e.vector)):
        return "poison", None  # larger than any valid one: the join state's bound rests on refusing it
    return "valid", e


def store_refuses(ref: common_pb2.UtteranceRef) -> bool:
    """PostgreSQL's columns: tenant up to 64 characters, ids and speakers 128, no NUL, 32-bit integers."""
    texts = (ref.tenant, ref.conversation_id, ref.speaker)
    return len(ref.tenant) > 64 or len(ref.conversation_id) > 128 or len(ref.speaker) > 128 or any("\x00" in s for s in texts) \
        or max(ref.sequence, ref.start_ms, ref.end_ms) > 2**31 - 1


def tenant_header(headers) -> bytes | None:
    return next((v for k, v in headers if k == "tenant"), None)


def known_bug(value: bytes) -> str | None:
    """Records that once crashed FusionProcessor.step (found by this fuzzer) and must now be
    dead-lettered by decode_embedding: why, or None."""
    try:
        e = events_pb2.ModalityEmbedding.FromString(value)
    except DecodeError:
        return None
    if not e.utterance.conversation_id or not e.vector or e.modality == 0:
        return None  # dead-lettered as it should be
    if e.modality not in MODALITIES:
        return "modality outside text/audio/vision"
    if not all(math.isfinite(v) and abs(v) <= 1e6 for v in e.vector):
        return "NaN, infinite or huge vector values"  # huge: the model overflows to NaN
    ref = e.utterance
    if max(ref.sequence, ref.start_ms, ref.end_ms) > 2**31 - 1:
        return "sequence/start_ms/end_ms beyond the store's 32-bit integers"
    return None


def test_fusion_step(inference, fusion):
    store, settings, dims = fusion

    @fuzz(300)
    @given(batch=st.lists(records(dims), min_size=1, max_size=5))
    def run(batch):
        bus = MemoryBus(partitions=1)
        processor = FusionProcessor(bus, store, inference, settings)
        processor.open()
        producer = bus.producer()
        for topic, key, value, headers in batch:
            producer.send(settings.topic(topic), key, value, headers)
        try:
            processor.step(poll_ms=0)  # must not raise, whatever came in
        finally:
            processor.close()

        poison = [(settings.topic(t), v, h) for t, _, v, h in batch if expected(v, h, dims)[0] == "poison"]
        dlq = bus.messages(settings.topic("dlq"))
        for m in dlq:
            assert (m.header("reason") or b"").strip(), "a dead letter without a reason"
        # Each poison record once, unchanged, with its headers and source topic (in any order:
        # the consumer goes topic by topic).
        got_dlq = sorted((m.header("source"), m.value, tuple(m.headers[:-2])) for m in dlq)
        assert got_dlq == sorted((t.encode(), v, tuple(h)) for t, v, h in poison)

        valid = [e for _, _, v, h in batch for kind, e in [expected(v, h, dims)] if kind == "valid"]
        want = {(e.utterance.tenant, e.utterance.conversation_id, e.utterance.sequence) for e in valid}
        events = [events_pb2.EmotionEvent.FromString(m.value) for m in bus.messages(settings.topic("emotions"))]
        got = [(e.utterance.tenant, e.utterance.conversation_id, e.utterance.sequence) for e in events]
        assert sorted(got) == sorted(want)
        for e in events:
            p = np.asarray(e.probabilities, np.float64)
            assert len(p) == 7 and np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1) < 1e-3, list(p)
            assert math.isfinite(e.confidence)
        count("fusion.step", "mixed" if poison and valid else "poison only" if poison else "valid only")

    run()


def _known_poison(**changes) -> bytes:
    e = events_pb2.ModalityEmbedding(
        utterance=common_pb2.UtteranceRef(tenant=TENANT, conversation_id="c1", sequence=1),
        modality=common_pb2.MODALITY_TEXT, vector=[0.1] * TEXT_DIM)  # the fusion model's text size
    for path, value in changes.items():
        target, _, name = path.rpartition("__")
        obj = getattr(e, target) if target else e
        if isinstance(value, list):
            del getattr(obj, name)[:]
            getattr(obj, name).extend(value)
        else:
            setattr(obj, name, value)
    return e.SerializeToString()


@pytest.mark.parametrize("value", [
    pytest.param(_known_poison(modality=7), id="unknown-modality"),
    pytest.param(_known_poison(vector=[math.nan] * TEXT_DIM), id="nan-vector"),
    pytest.param(_known_poison(vector=[1e29] * TEXT_DIM), id="huge-vector"),
    pytest.param(_known_poison(utterance__end_ms=2**63), id="end-ms-overflow"),
])
def test_known_poison_is_dead_lettered(inference, fusion, value):
    store, settings, dims = fusion
    assert known_bug(value) and dims["text"] == TEXT_DIM
    bus = MemoryBus(partitions=1)
    processor = FusionProcessor(bus, store, inference, settings)
    processor.open()
    bus.producer().send(settings.topic("embeddings.text"), b"c1", value, (("tenant", TENANT.encode()),))
    processor.step(poll_ms=0)
    [dead] = bus.messages(settings.topic("dlq"))
    assert dead.value == value and dead.header("reason")


@pytest.mark.parametrize("value, headers, reason", [
    pytest.param(_known_poison(utterance__tenant="t" * 65), (("tenant", b"t" * 65),), b"tenant is longer than 64", id="long-tenant"),
    pytest.param(_known_poison(utterance__conversation_id="c" * 129), (("tenant", b"t"),), b"conversation_id is longer than 128",
                 id="long-conversation"),
    pytest.param(_known_poison(utterance__speaker="a\x00b"), (("tenant", b"t"),), b"speaker contains a NUL", id="nul-speaker"),
    pytest.param(_known_poison(vector=[0.1] * 16), (("tenant", b"t"),), b"the text vector has 16 values", id="wrong-dimension"),
    pytest.param(_known_poison(), (("tenant", b"other"),), b"differs from utterance.tenant", id="tenant-header-disagrees"),
    pytest.param(_known_poison(), (), b"no tenant header", id="no-tenant-header"),
    pytest.param(_known_poison(encoder_version="v" * 100_000), (("tenant", b"t"),), b"largest valid text embedding", id="oversize"),
])
def test_records_the_store_or_model_would_refuse_are_dead_lettered_with_their_reason(inference, fusion, value, headers, reason):
    """Each once failed the step at every replay (over-long fields, NUL) or became an event with no modality (dimension)."""
    store, settings, dims = fusion
    bus = MemoryBus(partitions=1)
    processor = FusionProcessor(bus, store, inference, settings)
    processor.open()
    bus.producer().send(settings.topic("embeddings.text"), b"c1", value, headers)
    processor.step(poll_ms=0)
    [dead] = bus.messages(settings.topic("dlq"))
    assert dead.value == value and reason in dead.header("reason")
    assert bus.messages(settings.topic("emotions")) == []
