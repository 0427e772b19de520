"""Whisper's encoder in torch, its weights read from the CTranslate2 conversion the transcriber serves."""

import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import REPO

from merc.media import transcription
from merc.models.whisper_encoder import WhisperEncoder, log_mel, read_ctranslate2

WINDOW = 16000 * 30  # Whisper pads every input to 30 s; CTranslate2's encode takes that window


@pytest.fixture(scope="module")
def folder():
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    return transcription.model_dir()


def test_the_torch_encoder_computes_what_ctranslate2_serves_on_speech(folder):
    import ctranslate2

    torch.set_num_threads(1)
    wave, _ = sf.read(REPO / "examples" / "speech.flac", dtype="float32")
    mel = log_mel(np.pad(wave, (0, WINDOW - len(wave))))[None]
    served = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    expected = np.asarray(served.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    encoder = WhisperEncoder.from_ctranslate2(folder).eval()
    assert (encoder.cfg.width, encoder.cfg.layers, encoder.cfg.heads) == (512, 6, 8)  # Whisper base
    with torch.no_grad():
        ours = encoder(torch.from_numpy(mel)).numpy()
    assert ours.shape == expected.shape == (1, 1500, 512)
    np.testing.assert_allclose(ours, expected, atol=5e-3)
    cosine = (ours * expected).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert cosine.min() > 0.9999
    with torch.no_grad():  # a clip shorter than the window keeps its own length; longer is refused
        assert encoder(torch.from_numpy(mel[:, :, :300])).shape == (1, 150, 512)
        with pytest.raises(ValueError, match="longer than Whisper's window"):
            encoder(torch.zeros(1, 80, 3002))


def _model_bin(path, variables, version=6):
    def string(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, shape, dtype, nbytes, data in variables:
        out += string(name) + struct.pack("<B", len(shape)) + b"".join(struct.pack("<I", d) for d in shape)
        out += struct.pack("<BI", dtype, nbytes) + data
    path.write_bytes(out + struct.pack("<I", 0))
    return path


def test_a_model_bin_is_read_by_prefix_and_its_sizes_are_checked_before_reading(tmp_path):
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    good = _model_bin(tmp_path / "good.bin", [("decoder/x", (2,), 0, 8, b"\0" * 8), ("encoder/w", (2, 3), 4, 12, w.tobytes())])
    out = read_ctranslate2(good, prefix="encoder/")
    assert list(out) == ["encoder/w"] and np.array_equal(out["encoder/w"], w)
    # A header that claims 4 GiB: refused from the file's size, nothing allocated.
    huge = _model_bin(tmp_path / "huge.bin", [("encoder/w", (2**31 - 1,), 4, 2**32 - 2, b"")])
    with pytest.raises(ValueError, match="truncated"):
        read_ctranslate2(huge, prefix="encoder/")
    with pytest.raises(ValueError, match="truncated"):  # skipped variables are checked too
        read_ctranslate2(huge, prefix="decoder/")
    lying = _model_bin(tmp_path / "lying.bin", [("encoder/w", (2, 3), 4, 8, b"\0" * 8)])
    with pytest.raises(ValueError, match="shape"):
        read_ctranslate2(lying, prefix="encoder/")
    int8 = _model_bin(tmp_path / "int8.bin", [("encoder/w", (2, 3), 1, 6, b"\0" * 6)])
    with pytest.raises(ValueError, match="type 1"):
        read_ctranslate2(int8, prefix="encoder/")
    with pytest.raises(ValueError, match="binary version 2"):
        read_ctranslate2(_model_bin(tmp_path / "old.bin", [], version=2))
    with pytest.raises(ValueError, match="no variable"):
        read_ctranslate2(good, prefix="nothing/")
