"""Mood: a decayed running average of emotion probabilities, per speaker and per conversation."""

from __future__ import annotations

import numpy as np

from merc.pipeline.labels import LABELS, VALENCE_AROUSAL

_VA = np.array([VALENCE_AROUSAL[name] for name in LABELS], dtype=np.float64)  # [7, 2]


def update(previous: dict | None, probs: np.ndarray, decay: float) -> dict:
    """The mood after one more utterance. `decay` weighs the past (0 forgets at once)."""
    probs = np.asarray(probs, dtype=np.float64)
    label = LABELS[int(np.argmax(probs))]
    if not previous:
        mixed, shifts, count = probs, 0, 1
    else:
        mixed = decay * np.asarray(previous["probabilities"], dtype=np.float64) + (1 - decay) * probs
        shifts = previous["emotion_shifts"] + (label != previous["last_label"])
        count = previous["utterances"] + 1
    valence, arousal = mixed @ _VA
    return {
        "probabilities": [round(float(p), 6) for p in mixed],
        "valence": round(float(valence), 6),
        "arousal": round(float(arousal), 6),
        "emotion_shifts": int(shifts),
        "utterances": int(count),
        "last_label": label,
    }
