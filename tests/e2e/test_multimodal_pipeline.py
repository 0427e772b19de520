"""Text, voice and face through the real services: gateway and the separate encoders -> Triton -> Kafka -> fusion."""

import time

import grpc
import pytest
from conftest import REPO
from samples import face_png, voice_wav

from e2e.conftest import new_conversation
from merc.evaluation.wer import normalise
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2

pytestmark = pytest.mark.e2e

T, A, V = common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO, common_pb2.MODALITY_VISION


def request(conv, seq, text="", audio=None, faces=()):
    req = gateway_pb2.AnalyzeUtteranceRequest(
        utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker="A" if seq % 2 else "B"), text=text)
    if audio is not None:
        req.audio.data = audio
    req.faces.extend(encoder_pb2.Image(data=f) for f in faces)
    return req


def test_every_mix_of_modalities_through_the_gateway(gateway, reader):
    conv = new_conversation()
    voice, face = voice_wav(), face_png()
    mixes = [dict(text="Great job.", audio=voice, faces=[face, face]), dict(audio=voice), dict(faces=[face]),
             dict(text="Sure.", audio=b"RIFF-not-really-a-wav")]
    replies = [gateway.AnalyzeUtterance(request(conv, i, **m), timeout=30) for i, m in enumerate(mixes)]
    assert list(replies[0].modalities) == [T, A, V] and not replies[0].errors
    assert list(replies[3].modalities) == [T] and replies[3].errors[0].modality == A
    assert "cannot decode audio" in replies[3].errors[0].reason

    # Latest revision per utterance: on a cold start a slow encoder can miss the join window, giving a
    # degraded event and then a revision when its embedding lands.
    events: dict[int, object] = {}
    deadline = time.monotonic() + 90
    while len(events) < len(mixes) and time.monotonic() < deadline:
        for e in reader.collect(conv, 1, timeout_s=5):
            if e.utterance.sequence not in events or e.revision > events[e.utterance.sequence].revision:
                events[e.utterance.sequence] = e
    assert sorted(events) == list(range(len(mixes)))
    expected = [[T, A, V], [A], [V], [T]]
    for i, want in enumerate(expected):
        e = events[i]
        assert list(e.modalities) == want
        assert abs(sum(e.modality_weights) - 1) < 1e-4 and all(w > 0 for w in e.modality_weights)
        assert abs(sum(e.probabilities) - 1) < 1e-4 and e.label in e.prediction_set
        assert 0 <= e.incongruence <= 1
    assert events[0].incongruence > 0 and events[1].incongruence == 0
    # The undecodable audio was expected, never arrived: the event says so.
    assert events[3].degraded and list(events[3].missing_modalities) == [A]


def test_an_utterance_of_audio_alone_is_transcribed_and_read_as_text_too(gateway, reader):
    """The local stack's gateway transcribes (deploy/local/services.sh): the words of examples/speech.flac
    go to the text encoder through Triton's transcriber, and the event fuses text and voice."""
    conv = new_conversation()
    reply = gateway.AnalyzeUtterance(request(conv, 0, audio=(REPO / "examples" / "speech.flac").read_bytes()), timeout=60)
    assert normalise(reply.transcript) == normalise("Thank you so much for calling. I am really happy to help you today.")
    assert list(reply.modalities) == [T, A] and not reply.errors
    events = reader.collect(conv, 1)
    assert events and list(events[-1].modalities) == [T, A]


def test_the_audio_encoder_service_on_its_own(running, reader):
    conv = new_conversation()
    channel = grpc.insecure_channel(running.audio_encoder_url)
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=0, speaker="caller")
    reply = stub.Encode(encoder_pb2.EncodeRequest(utterance=ref, audio=encoder_pb2.Audio(data=voice_wav()), expected_modalities=[A]),
                        timeout=30)
    assert reply.modality == A and reply.dimensions == 128 and reply.quality.snr_db > 0
    with pytest.raises(grpc.RpcError) as err:
        stub.Encode(encoder_pb2.EncodeRequest(utterance=ref, audio=encoder_pb2.Audio(data=b"\0" * 8, encoding="pcm_s16le")), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sample_rate" in err.value.details()
    events = reader.collect(conv, 1)
    assert len(events) == 1 and list(events[0].modalities) == [A]
    channel.close()
