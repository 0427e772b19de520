import math

import pytest
import torch

from merc.data.meld import DataUnavailable
from merc.data.ravdess import VALIDATION_ACTORS, load_clips, parse_name, split_by_actor
from merc.models.audio_cnn import AudioCNN, AudioConfig
from merc.models.audio_features import HOP, N_MELS, SAMPLE_RATE, log_mel, trim_silence
from merc.pipeline.labels import LABELS


def test_file_names_map_to_platform_labels(tmp_path):
    calm = parse_name(tmp_path / "03-01-02-02-01-02-17.flac")
    assert (LABELS[calm.label], calm.actor, calm.strong) == ("neutral", 17, True)
    assert LABELS[parse_name(tmp_path / "03-01-03-01-01-01-01.flac").label] == "joy"
    with pytest.raises(ValueError, match="not a RAVDESS"):
        parse_name(tmp_path / "03-01-09-01-01-01-01.flac")


def test_splits_never_share_an_actor():
    try:
        clips = load_clips()
    except DataUnavailable as e:
        pytest.skip(f"RAVDESS not available here: {e}")
    train, val = split_by_actor(clips)
    assert {c.actor for c in train}.isdisjoint({c.actor for c in val})
    assert {c.actor for c in val} == set(VALIDATION_ACTORS)
    assert len(train) + len(val) == len(clips) == 1194


def test_log_mel_shape_and_per_utterance_standardisation():
    wave = torch.sin(2 * math.pi * 220 * torch.arange(SAMPLE_RATE) / SAMPLE_RATE)
    mel = log_mel(wave)
    assert mel.shape == (1, N_MELS, SAMPLE_RATE // HOP + 1)
    assert abs(float(mel.mean())) < 1e-4 and abs(float(mel.std()) - 1) < 1e-2
    # Gain does not change the standardised features (of a signal well above the log floor).
    noise = torch.randn(SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_mel(noise * 0.1), log_mel(noise), atol=1e-3, rtol=1e-3)
    assert log_mel(torch.zeros(10)).shape[1] == N_MELS  # shorter than a window still works


def test_trim_silence_keeps_the_voiced_part_with_a_margin():
    sr = SAMPLE_RATE
    wave = torch.cat([torch.zeros(sr), 0.5 * torch.randn(sr // 2), torch.zeros(sr)])
    trimmed = trim_silence(wave)
    assert sr // 2 <= len(trimmed) <= sr // 2 + int(0.25 * sr)


def test_cnn_handles_any_length_and_gives_embeddings():
    model = AudioCNN(AudioConfig()).eval()
    for seconds in (0.3, 1.0, 4.2):
        mel = log_mel(torch.randn(2, int(seconds * SAMPLE_RATE)))
        out = model(mel)
        assert out["embedding"].shape == (2, AudioConfig().embedding)
        assert out["logits"].shape == (2, len(LABELS))
