"""Audio-only utterances transcribed on the server (MERC_TRANSCRIBE_AUDIO): the gateway asks the audio encoder
for the words, and the transcript takes the path a client's text would: to the text encoder, into the stream's
context for the turns after it, and back to the caller, never into a log.

The gateway is the real one in-process (unit.gateway_harness); the audio encoder is a stub whose Transcribe
says what it is told to."""

from __future__ import annotations

import logging

import grpc
import pytest

from merc.v1 import common_pb2, encoder_pb2, gateway_pb2
from unit.gateway_harness import GUARD_S, FakeEncoder, gateways, pcm, stream, utterance

T, A = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO
SAID = ["thank you so much", "that is wonderful news"]


@pytest.fixture
def start(tmp_path):
    yield from gateways(tmp_path)


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class Transcribing(FakeEncoder):
    """The audio encoder: records what it was asked to transcribe and answers the next line of ``said``
    (or raises ``fails``)."""

    def __init__(self, bus, said=(), fails: Failed | None = None) -> None:
        super().__init__(bus, publish=False)
        self.said, self.fails = list(said), fails
        self.asked: list[encoder_pb2.TranscribeRequest] = []

    def Transcribe(self, request, timeout=None, metadata=()):
        self.asked.append(request)
        if self.fails is not None:
            raise self.fails
        return encoder_pb2.TranscribeResponse(text=self.said.pop(0), language="en", model="transcriber:test")


def with_transcriber(start, said=(), fails=None, **settings):
    g = start(**{"transcribe_audio": True, **settings})
    audio = Transcribing(g.encoder.bus, said, fails)
    g.servicer.encoders["audio"] = audio
    return g, audio


def test_an_audio_only_utterance_gets_its_words_as_text_and_the_caller_gets_them_back(start, caplog):
    g, audio = with_transcriber(start, SAID[:1], transcription_language="en")
    with caplog.at_level(logging.DEBUG):
        reply = g.stub.AnalyzeUtterance(utterance("c", 0, text="", audio=pcm(1.0)), timeout=GUARD_S)
    assert reply.transcript == SAID[0] and list(reply.modalities) == [T, A] and not reply.errors
    (asked,), (text,), (sound,) = audio.asked, g.encoder.sent, audio.sent
    assert asked.language == "en" and len(asked.audio.data) == 16000
    assert text.text == SAID[0] and not text.HasField("audio")
    assert list(text.expected_modalities) == list(sound.expected_modalities) == [T, A]
    assert "wonderful" not in caplog.text and SAID[0] not in caplog.text


def test_in_a_stream_a_transcript_is_context_for_the_next_turn(start):
    g, audio = with_transcriber(start, SAID)
    stream(g, [utterance("c", 0, text="", audio=pcm(1.0)), utterance("c", 1, text="", audio=pcm(1.0)),
               utterance("c", 2, text="and then?")])
    texts = [(r.text, r.context_text) for r in g.encoder.sent]
    assert texts[0] == (SAID[0], "")
    assert texts[1][0] == SAID[1] and SAID[0] in texts[1][1]
    assert texts[2][0] == "and then?" and SAID[1] in texts[2][1] and SAID[0] in texts[2][1]


def test_nothing_is_transcribed_when_off_or_when_the_client_sent_text_or_no_audio(start):
    g, audio = with_transcriber(start, SAID, transcribe_audio=False)
    reply = g.stub.AnalyzeUtterance(utterance("c", 0, text="", audio=pcm(1.0)), timeout=GUARD_S)
    assert list(reply.modalities) == [A] and reply.transcript == ""
    g, audio = with_transcriber(start, SAID)
    reply = g.stub.AnalyzeUtterance(utterance("c", 1, text="my own words", audio=pcm(1.0)), timeout=GUARD_S)
    assert reply.transcript == "" and [r.text for r in g.encoder.sent] == ["my own words"]
    g.servicer.encoders["vision"] = FakeEncoder(g.encoder.bus, publish=False)
    g.stub.AnalyzeUtterance(utterance("c", 2, text="", frames=[encoder_pb2.Image(data=b"x")]), timeout=GUARD_S)
    assert audio.asked == []


def test_audio_over_its_limit_is_refused_before_it_is_transcribed(start):
    g, audio = with_transcriber(start, SAID, max_audio_seconds=2.0)
    with pytest.raises(grpc.RpcError) as e:
        g.stub.AnalyzeUtterance(utterance("c", 0, text="", audio=pcm(2.5)), timeout=GUARD_S)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MERC_MAX_AUDIO_SECONDS" in e.value.details()
    assert audio.asked == []


def test_a_failed_transcription_leaves_the_voice_going_on_and_says_why(start):
    g, audio = with_transcriber(start, fails=Failed(grpc.StatusCode.UNAVAILABLE, "Triton model 'transcriber': not ready"))
    reply = g.stub.AnalyzeUtterance(utterance("c", 0, text="", audio=pcm(1.0)), timeout=GUARD_S)
    assert list(reply.modalities) == [A] and reply.transcript == ""
    assert [(e.modality, e.reason) for e in reply.errors] == [(T, "not transcribed: Triton model 'transcriber': not ready")]
    assert g.encoder.sent == [] and list(audio.sent[0].expected_modalities) == [A]


def test_silence_gives_no_text_and_is_said(start):
    g, audio = with_transcriber(start, [""])
    reply = g.stub.AnalyzeUtterance(utterance("c", 0, text="", audio=pcm(1.0)), timeout=GUARD_S)
    assert list(reply.modalities) == [A] and reply.transcript == ""
    assert [(e.modality, e.reason) for e in reply.errors] == [(T, "transcribed: no words were heard")]
    assert g.encoder.sent == []


def test_a_stream_that_asks_gets_each_transcript_before_its_event_and_others_never_do(start):
    g, audio = with_transcriber(start, SAID)
    requests = [utterance("c", 0, text="", audio=pcm(1.0)), utterance("c", 1, text="", audio=pcm(1.0))]
    asked = [gateway_pb2.StreamConversationRequest(utterance=u, send_transcripts=i == 0) for i, u in enumerate(requests)]
    responses = list(g.stub.StreamConversation(iter(asked), timeout=GUARD_S))
    items = [(r.WhichOneof("item"), getattr(r, r.WhichOneof("item")).utterance.sequence) for r in responses]
    assert [(r.transcribed.utterance.sequence, r.transcribed.transcript) for r in responses
            if r.HasField("transcribed")] == [(0, SAID[0]), (1, SAID[1])]
    for seq in (0, 1):
        assert items.index(("transcribed", seq)) < items.index(("event", seq))
    g, audio = with_transcriber(start, SAID)
    assert [r.WhichOneof("item") for r in stream(g, requests)] == ["event", "event"]
    assert len(audio.asked) == 2  # transcribed all the same, only not sent
