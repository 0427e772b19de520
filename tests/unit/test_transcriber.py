"""The served transcriber (merc.models.transcriber, Triton's `transcriber`) and the audio encoder's Transcribe:
the words of examples/speech.flac (espeak-ng's voice; examples/README.md says how it was made), a padded batch,
a language that is not one, audio that is not audio, and the encoders that do not transcribe."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

from merc.bus.memory import MemoryBus
from merc.encoder.server import EncoderServicer
from merc.evaluation.wer import normalise
from merc.inference.local import LocalInference
from merc.media import SAMPLE_RATE, transcription
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import AudioPlugin, TextPlugin
from merc.runtime.config import Settings
from merc.runtime.serving import Server
from merc.v1 import encoder_pb2, encoder_pb2_grpc
from unit.fakes import TinyInference

SPEECH = REPO / "examples" / "speech.flac"
SAID = "Thank you so much for calling. I am really happy to help you today."


@pytest.fixture(scope="module")
def local():
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    return LocalInference()


def test_a_padded_batch_gives_each_clip_its_own_words(local):
    wave, rate = sf.read(SPEECH, dtype="float32")
    assert rate == SAMPLE_RATE
    batch = np.zeros((2, len(wave)), np.float32)  # the second row: one second of silence, padded like Triton's batch
    batch[0] = wave
    out = local.infer("transcriber", {"WAVE": batch, "LENGTH": np.array([[len(wave)], [SAMPLE_RATE]], np.int64),
                                      "LANGUAGE": np.array([[b"en"], [b""]], dtype=object)})
    assert normalise(out["TEXT"][0][0].decode()) == normalise(SAID)
    assert out["TEXT"][1][0] == b""
    assert out["DETECTED_LANGUAGE"][0][0] == b"en"
    assert local.version("transcriber") == transcription.version()


def test_the_triton_config_names_the_version_the_code_reports():
    config = (REPO / "model_repository" / "transcriber" / "config.pbtxt").read_text()
    assert f'key: "model_version", value: {{ string_value: "{transcription.version()}" }}' in config


def test_the_language_list_is_whispers():
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert transcription.LANGUAGES == set(tokenizer._LANGUAGE_CODES)
    with pytest.raises(ValueError, match="unknown language 'english'"):
        transcription.transcribe(np.zeros(SAMPLE_RATE, np.float32), language="english")


@pytest.fixture
def encoder_stub():
    """stub(plugin, bus=None) -> an EncoderService stub on a real local gRPC server around that plug-in."""
    made = []

    def stub(plugin, bus=None):
        encoder = Encoder(plugin, (bus or MemoryBus()).producer(), f"merc.embeddings.{plugin.name}", "t")
        server = Server(0)
        server.add(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(encoder), "merc.v1.EncoderService")
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        made.append((server, channel))
        return encoder_pb2_grpc.EncoderServiceStub(channel)

    yield stub
    for server, channel in made:
        channel.close()
        server.grpc.stop(0)


def test_the_audio_encoder_transcribes_and_publishes_nothing(local, encoder_stub):
    bus = MemoryBus()
    stub = encoder_stub(AudioPlugin(local, Settings(tenant="t")), bus)
    reply = stub.Transcribe(encoder_pb2.TranscribeRequest(audio=encoder_pb2.Audio(data=SPEECH.read_bytes())), timeout=120)
    assert normalise(reply.text) == normalise(SAID) and reply.language == "en"
    assert reply.model == f"transcriber:{transcription.version()}"
    assert bus.messages("merc.embeddings.audio") == []


@pytest.mark.parametrize("request_kw, said", [
    ({"audio": encoder_pb2.Audio(data=b"RIFF-not-really-a-wav")}, "cannot decode audio"),
    ({"audio": encoder_pb2.Audio(data=b"\0\0" * 16000, encoding="pcm_s16le", sample_rate=8000, channels=1),
      "language": "english"}, "unknown language 'english'"),
    ({"audio": encoder_pb2.Audio(data=b"\0\0" * 8000 * 3, encoding="pcm_s16le", sample_rate=8000, channels=1)}, "MERC_MAX_AUDIO_SECONDS"),
])
def test_bad_audio_or_language_is_invalid_before_any_model_runs(encoder_stub, request_kw, said):
    inference = TinyInference()
    stub = encoder_stub(AudioPlugin(inference, Settings(tenant="t", max_audio_seconds=2.0)))
    with pytest.raises(grpc.RpcError) as e:
        stub.Transcribe(encoder_pb2.TranscribeRequest(**request_kw), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in e.value.details()
    assert inference.calls == []


def test_the_text_and_vision_encoders_do_not_transcribe(encoder_stub):
    stub = encoder_stub(TextPlugin(TinyInference(), Settings(tenant="t")))
    with pytest.raises(grpc.RpcError) as e:
        stub.Transcribe(encoder_pb2.TranscribeRequest(audio=encoder_pb2.Audio(data=SPEECH.read_bytes())), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "the audio encoder does" in e.value.details()


def test_a_gpu_ctranslate2_cannot_use_falls_back_to_the_cpu(monkeypatch, caplog):
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    real = transcription._model

    def no_cuda(threads, device="cpu", index=0):
        if device != "cpu":
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real(threads, device, index)

    monkeypatch.setattr(transcription, "_model", no_cuda)
    from merc.models.transcriber import Transcriber

    model = Transcriber(device="cuda", index=0, threads=2)
    assert (model.device, model.index) == ("cpu", 0)
    assert "transcribing on the CPU" in caplog.text
    wave, _ = sf.read(SPEECH, dtype="float32")
    out = model.infer({"WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64)})
    assert normalise(out["TEXT"][0][0].decode()) == normalise(SAID)
