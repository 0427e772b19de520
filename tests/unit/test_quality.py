import numpy as np
import pytest

from merc.media import quality
from merc.pipeline import incongruence

RATE = 16_000


def speechlike(seconds=2.0, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 1.0 * t) > 0)  # bursts and pauses
    return wave.astype(np.float32)


def test_features_are_bounded_and_ordered_like_the_proto():
    f = quality.features({"text_length": 10_000, "voiced_ratio": 2, "snr_db": -5, "clipping_ratio": 1, "sharpness": 1e9})
    assert f.shape == (quality.DIM,) and f.dtype == np.float32
    assert ((0 <= f) & (f <= 1)).all()
    assert f[quality.FIELDS.index("text_length")] == 1 and f[quality.FIELDS.index("snr_db")] == 0


def test_noise_lowers_the_snr_estimate_and_clipping_is_seen():
    clean = quality.audio_signals(speechlike())
    rng = np.random.default_rng(0)
    noisy = quality.audio_signals(speechlike() + 0.1 * rng.standard_normal(2 * RATE).astype(np.float32))
    assert clean["snr_db"] > 30 > noisy["snr_db"]
    assert 0 <= clean["voiced_ratio"] <= 1
    assert clean["clipping_ratio"] == 0
    assert quality.audio_signals(np.clip(speechlike() * 10, -1, 1))["clipping_ratio"] > 0.1
    assert quality.audio_signals(np.zeros(10, np.float32))["voiced_ratio"] == 0


def test_voice_activity_finds_speech_and_not_noise():
    from merc.data.meld import DataUnavailable
    from merc.data.ravdess import load_clips
    from merc.media import decode_audio, vad

    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.05
    assert vad.voiced_ratio(noise) < 0.05 and vad.speech_segments(noise[:100]) == []
    try:
        clip = load_clips()[0]
    except DataUnavailable:
        pytest.skip("RAVDESS (MERC_DATA_DIR) is not on this machine")
    speech = decode_audio(clip.path.read_bytes())
    # RAVDESS clips hold one sentence between about a second of silence on each side.
    assert 0.25 < vad.voiced_ratio(speech) < 0.9


def test_blur_lowers_sharpness():
    from PIL import Image, ImageFilter

    img = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(2)))
    assert quality.sharpness(img) > 10 * quality.sharpness(blurred)


def test_incongruence_is_zero_for_agreement_and_one_for_disjoint_certainty():
    p = np.eye(7)[[1, 1, 3]]  # text joy, audio joy, vision anger
    probs = np.stack([p, p])
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    s = incongruence.score(probs, mask)
    assert s[0] == pytest.approx(0)
    assert s[1] == pytest.approx(2 / 3)  # pairs: (joy, joy) 0, (joy, anger) 1, (joy, anger) 1
    assert incongruence.score(probs[:1], np.array([[0, 0, 1]]))[0] == 0


def test_text_length_is_reported_coarsely_and_moves_the_gate_feature_little():
    assert [quality.text_length(n) for n in (0, 1, 2, 3, 4, 5, 6, 11, 12, 181, 182, 5000)] == [0, 1, 2, 4, 4, 4, 8, 8, 16, 128, 256, 256]
    # A 4-digit PIN and its neighbours look alike: the record no longer says how many characters were sent.
    assert quality.text_length(3) == quality.text_length(4) == quality.text_length(5)
    i = quality.FIELDS.index("text_length")
    shift = max(abs(quality.features({"text_length": n})[i] - quality.features({"text_length": quality.text_length(n)})[i])
                for n in range(0, 2001))
    assert shift < 0.066


def test_the_text_encoder_publishes_the_coarse_length():
    from merc.pipeline.modalities import TextPlugin
    from merc.runtime.config import Settings
    from merc.v1 import encoder_pb2
    from unit.fakes import TinyInference

    plugin = TextPlugin(TinyInference(), Settings())
    lengths = {plugin.encode(encoder_pb2.EncodeRequest(text=t)).quality.text_length for t in ("123", "1234", "12345")}
    assert lengths == {4}
