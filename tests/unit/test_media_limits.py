"""Every decoder checks size before it allocates; media paths must be regular files (issue 17).

Each class of hostile input (tests/bombs.py) gets a clear error, or its true content, and the
memory it costs is measured in a fresh process (tests/memory_bounds.py): bounded by the limits,
not by what the file claims or what it would decode to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from bombs import NON_REGULAR, fifo, flac_silence, mkv_lying_duration, wav_lying
from memory_bounds import measure
from samples import media_file, speech
from scipy.signal import resample_poly

from merc import media
from merc.analyze import manifest, segment
from merc.analyze.requests import attach_media
from merc.media import files, video
from merc.media.resampling import Resampler
from merc.pipeline.modalities import InvalidInput
from merc.runtime.config import Settings
from merc.v1 import encoder_pb2

pytestmark = pytest.mark.timeout(60)
linux = pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc")
DECODE = "from merc import media\nimport scipy.signal\n"  # (scipy's import is the process's, not the call's)


@pytest.mark.parametrize("rate", [8000, 11_025, 44_100, 48_000, 96_000, 383_987, 16_001])
def test_block_by_block_resampling_is_resample_poly(rate):
    from fractions import Fraction

    x = np.random.default_rng(rate).uniform(-1, 1, 50_003).astype(np.float32)
    ratio = Fraction(16_000, rate).limit_denominator(1000)
    expected = resample_poly(x, ratio.numerator, ratio.denominator) if ratio != 1 else x
    for block in (7, 4096, 65_536):
        r = Resampler(rate)
        for i in range(0, len(x), block):
            r.feed(x[i : i + block])
        got = r.finish()
        assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-6)


# --- compressed bombs -------------------------------------------------------------------------------------------


def test_a_flac_bomb_is_refused_once_it_decodes_past_the_limit():
    bomb = flac_silence(10 * 3600)  # 10 hours, about 60 kB
    assert len(bomb) < 100_000
    with pytest.raises(media.MediaError, match="over 60 s long .* the limit is 60 s"):
        media.decode_audio(bomb, max_seconds=60)
    assert len(media.decode_audio(flac_silence(59.5), max_seconds=60)) == 59.5 * 16_000


@linux
def test_a_flac_bomb_costs_one_block_not_its_decoded_size():
    # Before: decoded whole (10 h at 8 kHz: 1.1 GB of float32) before the length was checked.
    m = measure(DECODE + "from bombs import flac_silence\ndata = flac_silence(10 * 3600)", "media.decode_audio(data, max_seconds=60)")
    assert m.error and "the limit is 60 s" in m.error
    assert m.growth_mb < 24, m


@linux
def test_the_largest_accepted_audio_is_held_at_16k_only():
    # Stereo at 384 kHz for 59.9 s: 184 MB as decoded float32; 3.8 MB as the 16 kHz mono output.
    m = measure(DECODE + "from bombs import flac_silence\ndata = flac_silence(59.9, rate=384_000, channels=2)",
                "len(media.decode_audio(data, max_seconds=60))")
    assert m.error is None and m.result == "958400"
    assert m.growth_mb < 24, m


@linux
def test_raw_pcm_longer_than_the_limit_is_refused_before_it_is_converted():
    # 32 MiB of 16-bit samples at 1 kHz: 4.6 h. Before: converted to float (64 MB, twice) and then measured.
    m = measure(DECODE + "data = bytes(32 * 2**20)", "media.decode_audio(data, 'pcm_s16le', 1000, 1, max_seconds=60)")
    assert m.error and "16777.2 s long; the limit is 60 s" in m.error
    assert m.growth_mb < 4, m


# --- lying headers ----------------------------------------------------------------------------------------------


def test_a_flac_whose_header_claims_more_than_it_has_is_a_clear_error():
    with pytest.raises(media.MediaError, match="the header says 8589934.6 s"):
        media.decode_audio(flac_silence(10, claimed_samples=2**36 - 1), max_seconds=60)


def test_a_flac_of_unknown_length_is_decoded_no_further_than_the_limit():
    # STREAMINFO's count 0 means "unknown": the frames decide, and the limit holds.
    with pytest.raises(media.MediaError, match="the limit is 60 s"):
        media.decode_audio(flac_silence(3600, claimed_samples=0), max_seconds=60)
    # libsndfile cannot read such a file to its end (it seeks to where its read stopped and fails):
    # a clear error, as before, now without allocating what the header implies.
    with pytest.raises(media.MediaError, match="cannot decode audio past 8.2 s"):
        media.decode_audio(flac_silence(10, claimed_samples=0), max_seconds=60)


def test_a_wav_whose_header_claims_4_gb_gives_its_real_second():
    assert len(media.decode_audio(wav_lying(1.0), max_seconds=60)) == 16_000


@linux
def test_a_lying_flac_header_costs_one_block():
    # Before: an array of the claimed length (2**36 samples) was allocated to read into.
    m = measure(DECODE + "from bombs import flac_silence\ndata = flac_silence(10, claimed_samples=2**36 - 1)",
                "media.decode_audio(data, max_seconds=60)")
    assert m.error and "the header says" in m.error
    assert m.growth_mb < 24, m


def test_a_video_whose_header_claims_centuries_is_planned_from_its_packets(tmp_path):
    path = mkv_lying_duration(tmp_path / "lie.mkv", seconds=2.0)
    # Before: windows planned from the header's 10**15 ms: 2.5 * 10**11 utterances.
    assert [(u.start_ms, u.end_ms) for u in segment.utterances(path, 3600)] == [(0, 2000)]
    assert len(video.frames_span(path, None, None, 3, 4096 * 4096, 3600)) == 3


def test_a_recording_past_the_limit_is_refused_while_decoding(tmp_path):
    bomb = tmp_path / "bomb.flac"
    bomb.write_bytes(flac_silence(10 * 3600))
    (item,) = segment.read(bomb, 120)
    assert isinstance(item, manifest.ManifestError) and "longer than 120 s" in str(item)
    assert "MERC_MAX_RECORDING_SECONDS" in str(item)
    silent = mkv_lying_duration(tmp_path / "long.mkv", seconds=3.0)
    with pytest.raises(media.MediaError, match="runs past 2 s"):
        segment.utterances(silent, 2)


@linux
def test_a_recording_bomb_costs_the_limit_not_the_file(tmp_path):
    bomb = tmp_path / "bomb.flac"
    bomb.write_bytes(flac_silence(10 * 3600))
    # 120 s at 16 kHz is 7.7 MB held; before, the 10 h track was decoded up to a fixed 4 h (921 MB, twice).
    m = measure(f"import pathlib, av\nfrom merc.media import video\npath = pathlib.Path({str(bomb)!r})",
                "video.audio_track(path, 120)")
    assert m.error and "longer than 120 s" in m.error
    assert m.growth_mb < 40, m


def test_max_recording_seconds_is_a_setting(monkeypatch):
    monkeypatch.setenv("MERC_MAX_RECORDING_SECONDS", "90")
    assert Settings().max_recording_seconds == 90
    assert Settings.model_fields["max_recording_seconds"].default == 7200


# --- non-regular files and size caps ----------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = fifo(tmp_path / "clip.wav")
    with pytest.raises(media.MediaError, match="FIFO"):
        files.read_regular_file(path, 1000)
    with pytest.raises(media.MediaError, match="FIFO"):
        video.audio_track(path, 60)
    (item,) = segment.read(path, 60)  # a bare "recording" that is a pipe
    assert isinstance(item, manifest.ManifestError) and "FIFO" in str(item)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("path", [p for p in NON_REGULAR if os.path.exists(p)])
def test_devices_and_directories_are_refused(path):
    with pytest.raises(media.MediaError, match="regular file"):
        files.read_regular_file(path, 1000)
    with pytest.raises(media.MediaError, match="regular file"):
        video.duration_ms(Path(path), 60)


@pytest.mark.timeout(10)
def test_manifest_media_must_be_regular_files_read_with_a_cap(tmp_path):
    cfg = Settings(max_message_bytes=10_000)
    pipe = fifo(tmp_path / "a.wav")
    for line in (manifest.Utterance(1, "c", 0, audio=pipe), manifest.Utterance(2, "c", 1, audio=tmp_path),
                 manifest.Utterance(3, "c", 2, frames=[tmp_path / "x.png", pipe]),
                 manifest.Utterance(4, "c", 3, video=Path("/dev/zero"))):
        (tmp_path / "x.png").write_bytes(b"\x89PNG")
        modality = "vision" if line.frames else "audio"
        with pytest.raises(InvalidInput, match="must be a regular file"):
            attach_media(line, encoder_pb2.EncodeRequest(), modality, cfg)
    big = tmp_path / "big.wav"
    big.write_bytes(wav_lying(1.0))  # 32 kB
    with pytest.raises(InvalidInput, match="larger than 10000 bytes, the request limit"):
        attach_media(manifest.Utterance(5, "c", 4, audio=big), encoder_pb2.EncodeRequest(), "audio", cfg)
    # The cap is the whole request's: frames that fit one by one but not together are refused.
    frame = tmp_path / "f.png"
    frame.write_bytes(bytes(4000))
    request = encoder_pb2.EncodeRequest()
    with pytest.raises(InvalidInput, match="larger than 2000 bytes"):
        attach_media(manifest.Utterance(6, "c", 5, frames=[frame] * 3), request, "vision", cfg)
    attach_media(manifest.Utterance(7, "c", 6, audio=big), request, "audio", Settings())
    assert len(request.audio.data) == big.stat().st_size


def test_a_span_longer_than_the_audio_limit_is_refused_before_it_is_copied(tmp_path):
    import soundfile as sf

    path = tmp_path / "talk.flac"
    sf.write(path, np.concatenate([speech(3.0), np.zeros(16_000, np.float32)]), 16_000)
    cfg = Settings(max_audio_seconds=2)
    with pytest.raises(InvalidInput, match="the span is 4.0 s long; the limit is 2 s"):
        attach_media(manifest.Utterance(1, "c", 0, video=path), encoder_pb2.EncodeRequest(), "audio", cfg)
    request = encoder_pb2.EncodeRequest()
    attach_media(manifest.Utterance(1, "c", 0, video=path, start_ms=0, end_ms=1500), request, "audio", cfg)
    assert len(request.audio.data) == 4 * 24_000


def test_frames_larger_than_the_limit_are_refused(tmp_path):
    path = media_file(tmp_path / "v.mp4", talk=(), seconds=1.0, fps=5, size=64, audio=False)
    with pytest.raises(media.MediaError, match="the limit is 100 pixels"):
        video.frames_span(path, None, None, 2, 100, 60)
