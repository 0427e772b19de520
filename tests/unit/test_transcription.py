"""Bare recordings transcribed offline (merc.media.transcription) and the words given to the utterances
voice activity finds (merc.analyze.segment)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from samples import speech

from merc.analyze import segment
from merc.data.ravdess import FOLDER, statement
from merc.evaluation.wer import edits, normalise, word_error_rate
from merc.media import SAMPLE_RATE, transcription
from merc.media.transcription import Word

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / FOLDER
# One of each statement, two actors (a man, a woman), strong intensity (happy). This copy of RAVDESS cuts
# every clip at 2.39 s, which takes "the door" off many: these two keep the whole sentence.
CLIPS = ("Actor_01/03-01-03-02-01-01-01.flac", "Actor_02/03-01-03-02-02-01-02.flac")
HOURS = 7200


def clips() -> list[Path]:
    if not DATA.is_dir():
        pytest.skip(f"RAVDESS is not on this machine ({DATA})")
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    return [DATA / c for c in CLIPS]


def test_a_clip_is_transcribed_to_its_sentence_with_word_times():
    for path in clips():
        wave, rate = sf.read(path, dtype="float32")
        assert rate == SAMPLE_RATE
        t = transcription.transcribe(wave, threads=2)
        assert normalise(t.text) == normalise(statement(path)), path.name
        assert t.language == "en"
        starts = [w.start_ms for w in t.words]
        assert starts == sorted(starts) and all(w.start_ms <= w.end_ms <= len(wave) * 1000 // rate for w in t.words)


def test_two_clips_with_a_second_between_become_two_utterances_saying_each_sentence(tmp_path, caplog):
    paths = clips()
    a, b = (sf.read(p, dtype="float32")[0] for p in paths)
    recording = tmp_path / "call.flac"
    sf.write(recording, np.concatenate([a, np.zeros(SAMPLE_RATE, np.float32), b]), SAMPLE_RATE)
    with caplog.at_level(logging.DEBUG):
        lines = segment.utterances(recording, HOURS)
    assert [normalise(u.text or "") for u in lines] == [normalise(statement(p)) for p in paths]
    assert all(u.given == ["text", "audio"] for u in lines)
    # The second utterance starts after the first ends, and no transcript word reaches a log line.
    assert lines[0].end_ms <= lines[1].start_ms
    logged = " ".join(r.getMessage().lower() for r in caplog.records)
    assert not {"kids", "dogs", "talking", "sitting"} & set(normalise(logged))


def test_without_the_packages_utterances_have_no_text_and_it_is_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import faster_whisper -> ImportError
    monkeypatch.setattr(transcription, "_model", transcription._model.__wrapped__)  # no model loaded before
    monkeypatch.setattr(segment, "_said", set())
    recording = tmp_path / "call.flac"
    sf.write(recording, np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech(2.0)]), SAMPLE_RATE)
    with caplog.at_level(logging.WARNING):
        first, second = segment.utterances(recording, HOURS), segment.utterances(recording, HOURS)
    assert [u.text for u in first + second] == [None, None] and first[0].given == ["audio"]
    said = [r.getMessage() for r in caplog.records if "transcription is off" in r.getMessage()]
    assert len(said) == 1 and "merc[transcribe]" in said[0]
    with pytest.raises(transcription.Unavailable, match="merc\\[transcribe\\]"):
        transcription.transcribe(np.zeros(SAMPLE_RATE, np.float32))


def test_voice_like_noise_gives_no_words():
    """Synthetic syllables pass voice activity; Whisper, made to read them, invents words unless
    its own no-speech judgement is heeded."""
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    wave = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech(2.0), np.zeros(SAMPLE_RATE // 2, np.float32)])
    assert transcription.transcribe(wave, threads=2).words == ()


def w(text: str, start: int, end: int) -> Word:
    return Word(text, start, end)


def test_each_word_goes_to_one_utterance_and_a_cut_through_a_word_moves_to_its_edge():
    # Two spans cut at 15 s inside "middle" (14.7-15.2 s, its middle before the cut): it stays in the first,
    # whose end moves to the word's end; the second starts there.
    found = [(1000, 15_000), (15_000, 20_000)]
    words = [w("a", 1200, 1500), w("middle", 14_700, 15_200), w("b", 15_600, 16_000), w("far", 30_000, 30_500)]
    spans, texts = segment.assign_words(found, words)
    assert texts == ["a middle", "b"]  # "far" is where no voice was heard: dropped
    assert spans == [(1000, 15_200), (15_200, 20_000)]


def test_a_word_just_outside_a_span_joins_the_nearest_and_widens_it():
    found = [(1000, 2000), (4000, 5000)]
    spans, texts = segment.assign_words(found, [w("early", 700, 950), w("late", 5100, 5600)])
    assert texts == ["early", "late"] and spans == [(700, 2000), (4000, 5600)]


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    assert edits("kids are talking".split(), "kids talking by".split()) == 2
    assert word_error_rate([("Kids are talking by the door.", "kids are talking by the door")]) == 0
    assert word_error_rate([("a b c d", "a x c"), ("e f", "e f g")]) == pytest.approx(3 / 6)


def test_the_model_is_assembled_once_atomically_and_a_bad_one_replaced(tmp_path, monkeypatch):
    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = transcription.model_dir()
    assert folder.parent == tmp_path / "merc"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary left behind
    size = sum(p.stat().st_size for p in transcription._parts())
    model = folder / "model.bin"
    assert model.stat().st_size == size
    # Readable by others: an image assembles it as root, Triton serves it as another user.
    assert folder.stat().st_mode & 0o755 == 0o755 and model.stat().st_mode & 0o044 == 0o044
    before = model.stat().st_mtime_ns
    assert transcription.model_dir() == folder and model.stat().st_mtime_ns == before  # reused, not rewritten
    with open(model, "r+b") as f:  # a crash mid-copy, from a version of this code that wrote in place
        f.truncate(size // 2)
    assert transcription.model_dir() == folder and model.stat().st_size == size
    os.remove(model)
