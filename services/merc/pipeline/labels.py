"""The one label map of the platform.

Every model, event and report uses LABELS in this order. Corpus-specific
names are mapped here and nowhere else.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise")
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
SENTIMENT_INDEX: dict[str, int] = {name: i for i, name in enumerate(SENTIMENTS)}

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")

# Valence and arousal per label in [-1, 1] (circumplex placement, after Russell 1980),
# used to summarise a speaker's mood.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "joy": (0.8, 0.5),
    "sadness": (-0.7, -0.4),
    "anger": (-0.6, 0.8),
    "fear": (-0.6, 0.6),
    "disgust": (-0.7, 0.3),
    "surprise": (0.2, 0.8),
}

# MELD uses the platform's names already.
MELD: dict[str, str] = {name: name for name in LABELS}

# RAVDESS file-name emotion code -> platform label.
RAVDESS: dict[str, str] = {
    "01": "neutral",
    "02": "neutral",  # calm
    "03": "joy",  # happy
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}

# FER2013 folder name -> platform label.
FER2013: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "neutral": "neutral",
    "sad": "sadness",
    "surprise": "surprise",
}


def label_index(name: str) -> int:
    try:
        return LABEL_INDEX[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown emotion label {name!r}; expected one of {', '.join(LABELS)}") from None
