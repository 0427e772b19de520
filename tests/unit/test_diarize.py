"""Who spoke: speaker vectors (merc.models.speaker_encoder), their clustering per recording
(merc.analyze.diarize), the diarisation error rate (merc.evaluation.der) and bare recordings' speakers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from merc import cli
from merc.analyze import diarize, segment
from merc.data.ravdess import FOLDER
from merc.evaluation.der import score
from merc.media import SAMPLE_RATE
from merc.models import speaker_encoder

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / FOLDER
HOURS = 7200


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def voices(order: list[int], shared: float = 0.0, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Unit vectors for utterances by speakers ``order``: one direction per speaker, plus a direction every voice
    shares (weight ``shared``: the room, the line) and noise."""
    rng = np.random.default_rng(seed)
    speaker = unit(rng.normal(size=(max(order) + 1, 64)))
    common = unit(rng.normal(size=64))
    return unit(np.stack([speaker[k] + shared * common + noise * rng.normal(size=64) for k in order]))


def test_utterances_group_by_voice_and_speakers_are_numbered_by_first_turn():
    order = [2, 0, 2, 1, 0, 1, 2]
    assert diarize.cluster(voices(order)) == [0, 1, 0, 2, 1, 2, 0]


def test_a_monologue_stays_one_speaker_and_a_strict_threshold_splits_everyone():
    assert diarize.cluster(voices([0] * 6)) == [0] * 6
    assert diarize.cluster(voices([0] * 6), diarize.Diarisation(threshold=0.999)) == list(range(6))


def test_a_known_count_separates_voices_that_a_shared_channel_makes_alike():
    order = [0, 1, 0, 1, 0, 1]
    alike = voices(order, shared=3.0)
    assert len(set(diarize.cluster(alike))) == 1  # unknown count: the shared part wins
    assert diarize.cluster(alike, diarize.Diarisation(speakers=2)) == [0, 1, 0, 1, 0, 1]
    assert diarize.cluster(alike[:1], diarize.Diarisation(speakers=2)) == [0]


def test_a_voice_at_the_recordings_mean_does_not_break_the_clustering():
    a, b = unit(np.eye(4)[0] + 0.1), unit(np.eye(4)[1] + 0.1)
    middle = (a + b) / 2  # exactly the three rows' mean: centred, it is the zero vector
    assert len(set(diarize.cluster(np.stack([a, middle, b]), diarize.Diarisation(speakers=2)))) == 2


def test_the_error_rate_matches_speakers_whatever_their_names():
    ref = [(0, 1000, "ann"), (1500, 2500, "bob")]
    assert score(ref, [(0, 1000, "S2"), (1500, 2500, "S1")]).rate() == 0.0
    # 200 ms missed, 300 ms where no one spoke, and bob's second half given to ann's speaker.
    err = score(ref, [(200, 1300, "S1"), (1500, 2000, "S2"), (2000, 2500, "S1")])
    assert (err.speech_ms, err.missed_ms, err.false_alarm_ms, err.confusion_ms) == (2000, 200, 300, 500)
    assert err.rate() == pytest.approx(1000 / 2000)
    assert score([], []).rate() == 0.0


def test_mel_filters_cover_the_band_with_unit_area_each():
    fb = speaker_encoder.mel_filterbank(40, 400)
    assert fb.shape == (40, 201) and bool((fb >= 0).all())
    hz_step = SAMPLE_RATE / 400
    assert torch.allclose(fb.sum(dim=1) * hz_step, torch.ones(40), atol=0.15)  # triangles of area ~1 on the bin grid
    assert int((fb.sum(dim=0) > 0).sum()) > 190  # nearly every bin feeds some band


def test_embeddings_are_unit_vectors_for_short_and_long_segments():
    torch.manual_seed(0)
    model = speaker_encoder.SpeakerEncoder().eval()
    rng = np.random.default_rng(0)
    waves = [rng.normal(scale=0.1, size=n).astype(np.float32) for n in (100, SAMPLE_RATE, 5 * SAMPLE_RATE + 123)]
    e = speaker_encoder.embed(waves, model)
    assert e.shape == (3, 256)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3)


def pretrained() -> speaker_encoder.SpeakerEncoder:
    if (reason := speaker_encoder.available()) is not None:
        pytest.skip(reason)
    return speaker_encoder.load()


def ravdess(*names: str) -> list[np.ndarray]:
    if not DATA.is_dir():
        pytest.skip(f"RAVDESS is not on this machine ({DATA})")
    return [sf.read(DATA / n, dtype="float32")[0] for n in names]


# Actor 01 (a man) and actor 02 (a woman), two clips each: different sentences, neutral and happy, normal
# intensity. (Strong intensity moves a voice much further: one man shouting in anger and laughing is barely
# closer to himself than to the woman; bench/results/diarisation.md has the figures over all emotions.)
MAN = ("Actor_01/03-01-01-01-01-01-01.flac", "Actor_01/03-01-03-01-02-01-01.flac")
WOMAN = ("Actor_02/03-01-01-01-01-01-02.flac", "Actor_02/03-01-03-01-02-01-02.flac")


def test_the_pretrained_encoder_puts_one_voice_closer_to_itself_than_to_another():
    model = pretrained()
    m1, m2, w1, w2 = speaker_encoder.embed(ravdess(*MAN, *WOMAN), model)
    assert m1 @ m2 > max(m1 @ w1, m1 @ w2) and w1 @ w2 > max(w1 @ m1, w1 @ m2)


def test_a_bare_recording_of_two_people_taking_turns_names_each_ones_speaker(tmp_path):
    pretrained()
    m1, m2, w1, w2 = ravdess(*MAN, *WOMAN)
    gap = np.zeros(SAMPLE_RATE, np.float32)
    recording = tmp_path / "call.flac"
    sf.write(recording, np.concatenate([m1, gap, w1, gap, m2, gap, w2]), SAMPLE_RATE)
    lines = segment.utterances(recording, HOURS)
    assert [u.speaker for u in lines] == ["S1", "S2", "S1", "S2"]
    assert [u.speaker for u in segment.utterances(recording, HOURS, speakers=1)] == ["S1"] * 4


def test_without_the_speaker_weights_utterances_share_one_speaker_and_it_is_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(speaker_encoder, "weights_path", lambda: None)
    monkeypatch.setattr(diarize, "_said", set())
    wave = np.zeros(SAMPLE_RATE, np.float32)
    with caplog.at_level(logging.WARNING):
        assert diarize.speakers(wave, [(0, 500), (500, 1000)]) is None
        assert diarize.speakers(wave, [(0, 500)]) is None
    said = [r.getMessage() for r in caplog.records if "diarisation" in r.getMessage()]
    assert len(said) == 1 and speaker_encoder.ENABLE in said[0]


def test_a_speaker_count_out_of_range_is_a_usage_error(tmp_path, capsys):
    recording = tmp_path / "call.wav"
    sf.write(recording, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    assert cli.main(["analyze", str(recording), "--speakers", "0"]) == cli.EXIT_USAGE
    assert "--speakers must be 1 to" in capsys.readouterr().err


def test_a_short_pause_joins_one_voice_but_not_two(monkeypatch):
    ms = SAMPLE_RATE // 1000
    pieces = [(0, 1000 * ms), (1300 * ms, 2300 * ms), (2600 * ms, 3600 * ms)]  # 300 ms pauses: under max_pause_ms
    monkeypatch.setattr(segment.vad, "speech_segments", lambda wave: pieces)
    wave = np.zeros(4 * SAMPLE_RATE, np.float32)
    assert segment.spans(wave) == [(0, 3600)]
    voice_of = lambda start: "ann" if start < 2500 * ms else "bob"  # noqa: E731
    same = lambda utterance, piece: voice_of(utterance[0]) == voice_of(piece[0])  # noqa: E731
    assert segment.spans(wave, same_voice=same) == [(0, 2300), (2600, 3600)]


def test_quick_turns_of_two_people_become_two_utterances(tmp_path):
    pretrained()
    man, woman = ravdess(MAN[0], WOMAN[0])
    # Each clip cut to its voice, then 300 ms between them: under the 700 ms that joins pauses.
    recording = tmp_path / "call.flac"
    sf.write(recording, np.concatenate([voiced(man), np.zeros(SAMPLE_RATE * 3 // 10, np.float32), voiced(woman)]),
             SAMPLE_RATE)
    lines = segment.utterances(recording, HOURS)
    assert [u.speaker for u in lines] == ["S1", "S2"]


def voiced(wave: np.ndarray) -> np.ndarray:
    found = segment.vad.speech_segments(wave)
    return wave[found[0][0] : found[-1][1]]


def test_a_voice_change_check_reads_only_the_speech_next_to_the_pause(monkeypatch):
    monkeypatch.setattr(speaker_encoder, "available", lambda: None)
    heard: list[int] = []

    def embed(waves):
        heard.extend(len(w) for w in waves)
        return np.stack([np.eye(4)[0]] * len(waves))

    monkeypatch.setattr(speaker_encoder, "embed", embed)
    cfg = diarize.Diarisation()
    same = diarize.same_voice(np.zeros(120 * SAMPLE_RATE, np.float32), cfg)
    # An hour-long run would otherwise be embedded whole at each of its pauses.
    assert same((0, 100 * SAMPLE_RATE), (101 * SAMPLE_RATE, 119 * SAMPLE_RATE))
    assert heard == [SAMPLE_RATE * cfg.turn_context_ms // 1000] * 2
