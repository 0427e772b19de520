"""Media files cut per utterance (merc.media.video) and bare recordings segmented by voice activity (merc.analyze.segment)."""

import json

import numpy as np
import pytest
import soundfile as sf
from samples import media_file, speech

from merc.analyze import manifest, segment
from merc.analyze.embedded import NotInFile, attach_media
from merc.cli import main
from merc.media import MediaError, video
from merc.pipeline.modalities import InvalidInput
from merc.runtime.config import Settings
from merc.v1 import encoder_pb2

CFG = Settings()
HOURS = CFG.max_recording_seconds


@pytest.fixture(autouse=True)
def no_transcripts(monkeypatch):
    """Segmentation is what these test; transcribing synthetic syllables would only cost seconds each
    (tests/unit/test_transcription.py covers that, noise included)."""
    monkeypatch.setattr(segment.transcription, "available", lambda: "transcription is off in these tests")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return media_file(tmp_path_factory.mktemp("video") / "call.mp4")


def test_the_audio_track_and_frames_of_a_span(clip):
    wave = video.audio_track(clip, HOURS)
    assert abs(len(wave) / 16_000 - 8.0) < 0.2 and wave.dtype == np.float32
    assert len(video.audio_span(clip, 1000, 3000, HOURS, 60)) == 32_000
    frames = video.frames_span(clip, 1000, 3000, 5, 4096 * 4096, HOURS)
    assert len(frames) == 5 and frames[0].shape == (64, 64) and frames[0].dtype == np.uint8


def test_spans_outside_the_file_and_oversized_frames_are_clear_errors(clip):
    with pytest.raises(MediaError, match="past the end"):
        video.audio_span(clip, 60_000, 61_000, HOURS, 60)
    with pytest.raises(MediaError, match="the limit is 100 pixels"):
        video.frames_span(clip, 0, 1000, 2, 100, HOURS)


def test_voice_activity_finds_the_utterances_in_order(clip):
    found = segment.spans(video.audio_track(clip, HOURS))
    assert len(found) == 2
    (a0, a1), (b0, b1) = found
    assert 900 <= a0 < 1300 and 2800 < a1 <= 3400 and 4900 <= b0 < 5300 and 6800 < b1 <= 7400


def test_a_pause_shorter_than_max_pause_stays_inside_one_utterance():
    rate = 16_000
    wave = np.concatenate([np.zeros(rate, np.float32), speech(1.0), np.zeros(rate // 4, np.float32), speech(1.0, seed=1),
                           np.zeros(rate, np.float32)])
    assert len(segment.spans(wave)) == 1
    assert len(segment.spans(wave, segment.Segmentation(max_pause_ms=50))) == 2


def test_long_speech_is_split_to_fit_the_audio_limit():
    wave = speech(5.0)
    found = segment.spans(wave, segment.Segmentation(max_utterance_ms=2000))
    assert len(found) >= 3 and all(e - s <= 2000 for s, e in found)


def test_a_bare_video_becomes_one_line_per_utterance(clip):
    lines = segment.utterances(clip, HOURS)
    assert [(u.conversation, u.utterance) for u in lines] == [("call", 0), ("call", 1)]
    assert all(u.given == ["audio", "vision"] and u.video == clip for u in lines)


def test_an_audio_only_file_gives_audio_alone(tmp_path):
    path = tmp_path / "call.flac"
    sf.write(path, np.concatenate([np.zeros(16_000, np.float32), speech(2.0), np.zeros(8000, np.float32)]), 16_000)
    (u,) = segment.utterances(path, HOURS)
    assert u.given == ["audio"]
    request = encoder_pb2.EncodeRequest()
    attach_media(u, request, "audio", CFG)
    assert request.audio.encoding == "pcm_f32le" and request.audio.sample_rate == 16_000
    assert len(request.audio.data) == 4 * 16_000 * (u.end_ms - u.start_ms) // 1000


def test_a_silent_video_is_cut_in_fixed_windows_and_has_no_audio_to_give(tmp_path):
    path = media_file(tmp_path / "silent.mp4", audio=False, seconds=9.0)
    lines = segment.utterances(path, HOURS)
    assert [(u.start_ms, u.end_ms) for u in lines] == [(0, 4000), (4000, 8000), (8000, 9000)]
    with pytest.raises(NotInFile, match="no audio track"):
        attach_media(lines[0], encoder_pb2.EncodeRequest(), "audio", CFG)


def test_a_corrupt_file_is_a_clear_error_not_a_crash(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(MediaError, match="broken.mp4"):
        segment.utterances(path, HOURS)
    u = manifest.Utterance(line=3, conversation="c", utterance=0, video=path, start_ms=0, end_ms=1000)
    with pytest.raises(InvalidInput, match="broken.mp4"):
        attach_media(u, encoder_pb2.EncodeRequest(), "vision", CFG)


def test_merc_analyze_on_a_bare_video_and_on_a_manifest_that_cuts_it(clip, tmp_path, capsys):
    assert main(["analyze", str(clip), "--json", "--threads", "1"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["utterance"] for r in rows] == [0, 1]
    for r in rows:
        assert "audio" in r["modalities"] and sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
        # The synthetic face is not one a detector finds: vision is tried, and the reason says so.
        assert "vision" in r["modalities"] or any("no face" in e for e in r.get("errors", []))

    (tmp_path / "m.jsonl").write_text(json.dumps({"conversation": "v", "text": "Great job.", "video": str(clip),
                                                  "start_ms": 1000, "end_ms": 3000}) + "\n")
    assert main(["analyze", str(tmp_path / "m.jsonl"), "--json", "--threads", "1"]) == 0
    (r,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert r["modalities"][:2] == ["text", "audio"]


def test_merc_analyze_on_a_corrupt_video_says_why(tmp_path, capsys):
    path = tmp_path / "broken.mkv"
    path.write_bytes(b"not a matroska file")
    assert main(["analyze", str(path), "--json", "--threads", "1"]) != 0
    assert "broken.mkv" in capsys.readouterr().err
