"""Training and serving hand the text encoder the same bytes: one path builds every text request.

The same labelled manifest goes through training (``merc.data.labelled``, as ``merc train fusion
--manifest`` reads it), the embedded mode (``merc analyze``) and the gateway's stream (what
``--remote`` and live clients use); a recording inference client keeps what the text model got.
"""

import json
import threading

import pytest

from merc.analyze import manifest
from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.requests import gateway_request
from merc.bus.memory import MemoryBus
from merc.data import fusion_examples, labelled
from merc.data.meld import Dialogue, Utterance
from merc.gateway.hub import EventHub
from merc.gateway.server import GatewayServicer
from merc.pipeline import text_context
from merc.pipeline.labels import LABEL_INDEX
from merc.pipeline.modalities import TextPlugin
from merc.runtime.config import Settings
from merc.store import Store
from merc.training import text as text_training
from merc.v1 import encoder_pb2, gateway_pb2
from unit.fakes import TEXT_DIM, TinyInference

# Two conversations interleaved, repeated and unnamed speakers, runs of spaces, typographic quotes.
LINES = [
    ("a", 0, "Ann", "Hello  there,\thow are you?", "neutral"),
    ("b", 0, "Bo", "I \u201chate\u201d   waiting.", "anger"),
    ("a", 1, "Cy", "Not great \u2014 my parcel is lost.", "sadness"),
    ("a", 2, "Ann", "Oh no!\n\nLet me check.", "surprise"),
    ("b", 1, "", "Still waiting...", "anger"),
    ("a", 3, "Cy", "Thanks,  really.", "joy"),
    ("a", 4, "Ann", "It arrives tomorrow.", "joy"),
]


class Recorder(TinyInference):
    def __init__(self) -> None:
        super().__init__()
        self.text_inputs: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()

    def infer(self, model, inputs):
        if model == "text_encoder":
            with self.lock:
                self.text_inputs += [(t[0], c[0]) for t, c in zip(inputs["TEXT"], inputs["CONTEXT"], strict=True)]
        return super().infer(model, inputs)


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "labelled.jsonl"
    p.write_text("".join(json.dumps({"conversation": c, "utterance": u, "speaker": s, "text": t, "label": y}) + "\n"
                         for c, u, s, t, y in LINES))
    return p


def trained_on(path, settings) -> list[tuple[bytes, bytes]]:
    rec = Recorder()
    labelled.encode(path, {"text": TextPlugin(rec, settings)}, {"text": TEXT_DIM, "audio": 4, "vision": 4})
    return rec.text_inputs


def served_embedded(path, settings, tmp_path) -> list[tuple[bytes, bytes]]:
    rec = Recorder()
    pipeline = EmbeddedPipeline(settings, db_path=str(tmp_path / "e.db"), inference=rec)
    try:
        results = list(pipeline.analyze(path))
    finally:
        pipeline.close()
    assert all(r.event is not None for r in results)
    return rec.text_inputs


class _Stub:
    """An encoder reached over gRPC, minus the network: the text plug-in on the request the gateway sends."""

    def __init__(self, plugin: TextPlugin) -> None:
        self.plugin = plugin

    def Encode(self, request: encoder_pb2.EncodeRequest, timeout=None, metadata=()):
        self.plugin.encode(request)
        return encoder_pb2.EncodeResponse()


class _Active:
    def is_active(self) -> bool:
        return True


def served_by_gateway_stream(path, settings, tmp_path) -> list[tuple[bytes, bytes]]:
    """The gateway fills each utterance's context itself when the client sends none (live clients)."""
    rec = Recorder()
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.migrate()
    hub = EventHub(MemoryBus(), "merc.emotions")
    gateway = GatewayServicer({"text": _Stub(TextPlugin(rec, settings))}, store, hub, "default", stream_idle_s=0.05)
    lines = [u for u in manifest.read(path) if not isinstance(u, manifest.ManifestError)]
    # One stream carrying both conversations, interleaved as in the file.
    requests = (gateway_pb2.StreamConversationRequest(utterance=gateway_request(u, "", "")) for u in lines)
    list(gateway._stream(requests, _Active()))
    store.close()
    return rec.text_inputs


def test_training_on_a_manifest_and_serving_it_hand_the_text_encoder_identical_bytes(path, tmp_path):
    settings = Settings(inference="local", tenant="default")
    trained = trained_on(path, settings)
    embedded = served_embedded(path, settings, tmp_path)
    streamed = served_by_gateway_stream(path, settings, tmp_path)
    assert len(trained) == len(LINES)
    assert trained == embedded == streamed
    # Not vacuous: contexts carry earlier turns of their own conversation only, marked by speaker.
    contexts = [c.decode() for _, c in trained]
    assert contexts[0] == "" and contexts[1] == ""
    assert contexts[2] == "(other) Hello there, how are you?"
    assert contexts[3] == '(other) Not great - my parcel is lost. | (same) Hello there, how are you?'
    assert contexts[4] == '(other) I "hate" waiting.'  # an unnamed speaker is nobody's "same"


def test_corpus_training_reads_what_serving_sends(path, tmp_path):
    """MELD training (fusion embeddings and the text adapter's examples) gets the served bytes for the same turns."""
    settings = Settings(inference="local", tenant="default")
    embedded = served_embedded(path, settings, tmp_path)
    dialogues = []
    for conversation in ("a", "b"):
        lines = [(s, t, y) for c, _, s, t, y in LINES if c == conversation]
        utterances = tuple(Utterance(conversation, i, s, 0, t, LABEL_INDEX[y], 0) for i, (s, t, y) in enumerate(lines))
        dialogues.append(Dialogue(conversation, utterances))
    texts, contexts = fusion_examples._contexts(dialogues)
    by_conversation = [i for c in ("a", "b") for i, line in enumerate(LINES) if line[0] == c]
    assert [(t.encode(), c.encode()) for t, c in zip(texts, contexts, strict=True)] == [embedded[i] for i in by_conversation]
    adapter = text_training.examples(dialogues)
    assert adapter.contexts == contexts
    assert adapter.texts == [text_context.normalise_text(t) for t in texts]  # the adapter's trainer tokenises normalised text, as the model does
