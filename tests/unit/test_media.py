import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from merc import media


def wav(seconds, rate, channels=1, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), channels), np.float32) + 0.1, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("rate, fmt", [(16_000, "WAV"), (44_100, "FLAC"), (8_000, "OGG")])
def test_containers_are_resampled_to_16k_mono(rate, fmt):
    wave = media.decode_audio(wav(1.0, rate, channels=2, fmt=fmt))
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 16_000) <= 2


def test_raw_pcm():
    pcm = (np.full(4800, 1000, "<i2")).tobytes()
    wave = media.decode_audio(pcm, "pcm_s16le", 48_000, 1)
    assert len(wave) == 1600 and np.allclose(wave[100:-100], 1000 / 32768, atol=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    ({"data": b"not audio"}, "cannot decode audio"),
    ({"data": b""}, "audio is empty"),
    ({"data": b"\0" * 6, "encoding": "pcm_s16le"}, "needs sample_rate"),
    ({"data": b"\0" * 3, "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}, "whole number"),
    ({"data": b"\0" * 4, "encoding": "mp3"}, "not supported"),
    ({"data": wav(3.0, 8000), "max_seconds": 2.0}, "the limit is 2 s"),
])
def test_bad_audio_gets_a_precise_error(kwargs, message):
    with pytest.raises(media.MediaError, match=message):
        media.decode_audio(**kwargs)


def test_images_decode_to_greyscale_and_limits_hold():
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="JPEG")
    grey = media.decode_image(buf.getvalue(), max_pixels=10_000)
    assert grey.shape == (20, 30) and grey.dtype == np.uint8
    with pytest.raises(media.MediaError, match="limit is 100 pixels"):
        media.decode_image(buf.getvalue(), max_pixels=100)
    with pytest.raises(media.MediaError, match="cannot decode image"):
        media.decode_image(b"\x89PNG broken", max_pixels=100)
