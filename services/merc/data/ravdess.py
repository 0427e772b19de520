"""RAVDESS speech (16 kHz FLAC): labels from file names, splits by actor only.

Name: 03-01-EE-II-SS-RR-AA.flac — EE emotion, II intensity (01 normal, 02 strong),
SS statement, RR repetition, AA actor (odd = male).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merc.data.meld import DataUnavailable, data_root
from merc.pipeline.labels import RAVDESS, label_index

FOLDER = "ravdess-speech-16k"
# The protocol: train on actors 1-16, validate on 17-20 (never mix actors).
VALIDATION_ACTORS = frozenset(range(17, 21))
# What each clip says, by its SS field: the reference for transcription (bench/transcription.py).
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


@dataclass(frozen=True)
class Clip:
    path: Path
    actor: int
    label: int  # index into merc.pipeline.labels.LABELS
    strong: bool


def parse_name(path: Path) -> Clip:
    parts = path.stem.split("-")
    if len(parts) != 7 or parts[2] not in RAVDESS:
        raise ValueError(f"{path.name} is not a RAVDESS speech file name (03-01-EE-II-SS-RR-AA)")
    return Clip(path=path, actor=int(parts[6]), label=label_index(RAVDESS[parts[2]]), strong=parts[3] == "02")


def statement(path: Path) -> str:
    """The sentence a RAVDESS speech file says."""
    return STATEMENTS[path.stem.split("-")[4]]


def load_clips(root: Path | None = None) -> list[Clip]:
    folder = (root or data_root()) / FOLDER
    if not folder.is_dir():
        raise DataUnavailable(f"{folder} not found")
    return sorted((parse_name(p) for p in folder.glob("Actor_*/*.flac")), key=lambda c: c.path.name)


def split_by_actor(clips: list[Clip], validation: frozenset[int] = VALIDATION_ACTORS) -> tuple[list[Clip], list[Clip]]:
    train = [c for c in clips if c.actor not in validation]
    val = [c for c in clips if c.actor in validation]
    return train, val
