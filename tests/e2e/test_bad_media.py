"""Corrupt and oversized input on every entry point (gateway, each encoder service): a precise
INVALID_ARGUMENT, nothing published for it, and the service still SERVING afterwards."""

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from e2e.conftest import new_conversation
from merc.runtime.healthcheck import check
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2

pytestmark = pytest.mark.e2e


def png(width, height) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def bad_inputs(cfg):
    """(what, modality, fields of the request, what the message must say)."""
    long_pcm = np.zeros(int((cfg.max_audio_seconds + 1) * 8000), "<i2").tobytes()
    return [
        ("corrupt audio", "audio", {"audio": encoder_pb2.Audio(data=b"RIFF\x00\x00garbage")}, "cannot decode audio"),
        ("audio too long", "audio", {"audio": encoder_pb2.Audio(data=long_pcm, encoding="pcm_s16le", sample_rate=8000, channels=1)},
         "the limit is"),
        ("odd PCM", "audio", {"audio": encoder_pb2.Audio(data=b"\x00" * 3, encoding="pcm_s16le", sample_rate=8000, channels=1)},
         "whole number"),
        ("corrupt image", "vision", {"faces": [encoder_pb2.Image(data=b"\x89PNG\r\n\x1a\nnope")]}, "cannot decode image"),
        ("image too large", "vision", {"frames": [encoder_pb2.Image(data=png(4200, 4100))]}, "pixels"),
        ("too many frames", "vision", {"faces": [encoder_pb2.Image(data=png(48, 48))] * (cfg.max_frames + 1)}, "MERC_MAX_FRAMES"),
        ("text too long", "text", {"text": "x" * (cfg.max_text_chars + 1)}, "MERC_MAX_TEXT_CHARS"),
    ]


URLS = {"text": "text_encoder_url", "audio": "audio_encoder_url", "vision": "vision_encoder_url"}


@pytest.mark.parametrize("case", range(7))
def test_each_encoder_service_rejects_bad_input_precisely(running, case):
    what, modality, fields, says = bad_inputs(running)[case]
    target = getattr(running, URLS[modality])
    with grpc.insecure_channel(target) as channel:
        ref = common_pb2.UtteranceRef(conversation_id=new_conversation(), sequence=0)
        with pytest.raises(grpc.RpcError) as err:
            encoder_pb2_grpc.EncoderServiceStub(channel).Encode(encoder_pb2.EncodeRequest(utterance=ref, **fields), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
    assert says in err.value.details(), (what, err.value.details())
    assert check(target), f"{modality} encoder not SERVING after {what}"


@pytest.mark.parametrize("case", range(7))
def test_the_gateway_rejects_bad_input_precisely_and_keeps_the_rest(running, gateway, case):
    what, modality, fields, says = bad_inputs(running)[case]
    ref = common_pb2.UtteranceRef(conversation_id=new_conversation(), sequence=0)
    alone = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, **fields)
    with pytest.raises(grpc.RpcError) as err:
        gateway.AnalyzeUtterance(alone, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in err.value.details(), (what, err.value.details())

    if modality != "text":  # with good text beside it, the utterance goes on without the bad modality
        mixed = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="Fine, thanks.", **fields)
        reply = gateway.AnalyzeUtterance(mixed, timeout=30)
        assert list(reply.modalities) == [common_pb2.MODALITY_TEXT]
        assert says in reply.errors[0].reason
    assert check(f"127.0.0.1:{running.gateway_port}"), f"gateway not SERVING after {what}"


def test_a_bad_utterance_in_a_stream_is_rejected_and_the_stream_goes_on(running, gateway):
    conv = new_conversation()
    what, _, fields, says = bad_inputs(running)[0]

    def requests():
        for seq, extra in enumerate([{"text": "Hello there."}, fields, {"text": "Are you still there?"}]):
            ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker="A")
            yield gateway_pb2.StreamConversationRequest(utterance=gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, **extra))

    replies = list(gateway.StreamConversation(requests(), timeout=120))
    rejected = [r.rejected for r in replies if r.WhichOneof("item") == "rejected"]
    events = [r.event for r in replies if r.WhichOneof("item") == "event"]
    assert [r.utterance.sequence for r in rejected] == [1] and rejected[0].code == "INVALID_ARGUMENT"
    assert says in rejected[0].reason, what
    assert sorted({e.utterance.sequence for e in events}) == [0, 2]
