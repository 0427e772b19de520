"""MELD text annotations as dialogues (train_sent_emo.csv, dev_sent_emo.csv).

The corpus lives outside the repository (``MERC_DATA_DIR``, or a ``shared/data`` folder
beside the checkout); where it is absent every entry point raises
``DataUnavailable`` so tests and scripts can skip with a clear message.

Dialogue_ID restarts at 0 in each split, so a dialogue's key is ``"<split>/<id>"``.
Speakers are numbered per dialogue by order of first appearance: the model sees
"the first person who spoke", never a character name.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merc.pipeline.labels import MELD, SENTIMENT_INDEX, label_index

SPLITS = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv"}


class DataUnavailable(RuntimeError):
    """The shared data folder (or a file in it) is not on this machine."""


@dataclass(frozen=True)
class Utterance:
    dialogue: str  # "<split>/<Dialogue_ID>"
    index: int  # Utterance_ID as given (may skip numbers: MELD dropped some clips)
    speaker: str
    speaker_index: int  # order of first appearance within the dialogue
    text: str
    emotion: int  # index into merc.pipeline.labels.LABELS
    sentiment: int  # index into merc.pipeline.labels.SENTIMENTS


@dataclass(frozen=True)
class Dialogue:
    key: str
    utterances: tuple[Utterance, ...]

    def __len__(self) -> int:
        return len(self.utterances)


def repo_root() -> Path:
    """The project root: the first ancestor of this file holding pyproject.toml."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return here.parents[3]


def data_root() -> Path:
    """``MERC_DATA_DIR`` if set, else a ``shared/data`` folder beside the checkout; raises DataUnavailable if missing."""
    from merc.runtime.config import settings

    configured = settings().data_dir
    root = Path(configured) if configured else repo_root().parent / "shared" / "data"
    if not root.is_dir():
        raise DataUnavailable(
            f"data folder {root} not found: MELD lives outside the repository "
            "(set MERC_DATA_DIR to the folder that holds the corpora)"
        )
    return root


# Mojibake: UTF-8 bytes once decoded as Windows-1252. Public MELD copies carry e.g. "â€™" for "’".
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152-\u2122]{1,3}")


def _unmangle(match: re.Match) -> str:
    s = match.group(0)
    try:
        return s.encode("cp1252").decode("utf-8")
    except UnicodeError:
        return s


def clean_text(text: str) -> str:
    """Repair mojibake runs, drop replacement characters and stray control bytes, squeeze spaces."""
    text = _MOJIBAKE.sub(_unmangle, text)
    text = text.replace("\ufffd", "")
    text = "".join(ch for ch in text if ch >= " " or ch in "\t\n")
    return " ".join(text.split())


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataUnavailable(f"{path} not found")
    # errors="replace": a bad byte must cost one character, not the whole corpus.
    raw = path.read_bytes().decode("utf-8-sig", errors="replace")
    return list(csv.DictReader(io.StringIO(raw, newline="")))


def load_split(split: str, root: Path | None = None) -> list[Dialogue]:
    """All dialogues of one split, ordered by Dialogue_ID, utterances by Utterance_ID."""
    if split not in SPLITS:
        raise ValueError(f"unknown MELD split {split!r}; expected one of {', '.join(SPLITS)}")
    path = (root or data_root()) / "meld" / SPLITS[split]
    grouped: dict[int, list[dict[str, str]]] = {}
    for row in _read_csv(path):
        grouped.setdefault(int(row["Dialogue_ID"]), []).append(row)

    dialogues = []
    for dia_id in sorted(grouped):
        rows = sorted(grouped[dia_id], key=lambda r: int(r["Utterance_ID"]))
        key = f"{split}/{dia_id}"
        speakers: dict[str, int] = {}
        utterances = []
        for row in rows:
            speaker = clean_text(row["Speaker"])
            speakers.setdefault(speaker, len(speakers))
            utterances.append(
                Utterance(
                    dialogue=key,
                    index=int(row["Utterance_ID"]),
                    speaker=speaker,
                    speaker_index=speakers[speaker],
                    text=clean_text(row["Utterance"]),
                    emotion=label_index(MELD[row["Emotion"].strip().lower()]),
                    sentiment=SENTIMENT_INDEX[row["Sentiment"].strip().lower()],
                )
            )
        dialogues.append(Dialogue(key=key, utterances=tuple(utterances)))
    return dialogues


def holdout_split(dialogues: list[Dialogue], fraction: float, seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """Split by dialogue (never by utterance) into (kept, held out), reproducibly from a seed."""
    order = np.random.default_rng(seed).permutation(len(dialogues))
    n_out = int(round(len(dialogues) * fraction))
    out = set(order[:n_out].tolist())
    kept = [d for i, d in enumerate(dialogues) if i not in out]
    held = [d for i, d in enumerate(dialogues) if i in out]
    return kept, held
