"""Who spoke each utterance of a bare recording: speaker embeddings per utterance, clustered per recording.

Each utterance's voice becomes a d-vector (merc.models.speaker_encoder). Utterances are then merged
bottom-up, closest pair of groups first (average cosine similarity between their members), until no
two groups are more alike than ``threshold`` or, when the caller knows how many people spoke, until
that many are left. With the count known, the recording's mean vector is taken off every utterance's
first: what all its voices share (the room, the line, the words) then stops pulling them together.
That cannot decide whether there is more than one voice (a monologue's utterances, centred, look like
several people), so with the count unknown the vectors are used as they are. Speakers are named in order of first appearance ("S1", "S2", ...), so the
names mean something within one recording only, like a transcript's speaker turns.

The threshold was chosen on recordings built from the training actors of RAVDESS and is reported on
the validation actors (bench/results/diarisation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from merc.media import SAMPLE_RATE
from merc.models import speaker_encoder

log = logging.getLogger(__name__)
_said: set[str] = set()


@dataclass(frozen=True)
class Diarisation:
    # Average cosine similarity above which two groups of utterances are one speaker (bench/diarisation.py).
    threshold: float = 0.56
    speakers: int | None = None  # the number of people, when known: clusters down to exactly that many


def cluster(embeddings: np.ndarray, cfg: Diarisation = Diarisation()) -> list[int]:
    """Average-linkage agglomerative clustering of unit vectors: a cluster index per row, numbered by first row."""
    n = len(embeddings)
    groups: list[list[int]] = [[i] for i in range(n)]
    if cfg.speakers is not None and cfg.speakers > 1 and n > 1:
        centred = embeddings - embeddings.mean(axis=0)
        embeddings = centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-6)
    sim = embeddings @ embeddings.T
    while len(groups) > 1:
        best, pair = -np.inf, (0, 1)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                s = float(sim[np.ix_(groups[a], groups[b])].mean())
                if s > best:
                    best, pair = s, (a, b)
        enough = cfg.speakers is not None and len(groups) <= cfg.speakers
        if enough or (cfg.speakers is None and best < cfg.threshold):
            break
        a, b = pair
        groups[a] += groups.pop(b)
    label = np.empty(n, dtype=int)
    for k, g in enumerate(sorted(groups, key=min)):
        label[g] = k
    return label.tolist()


def speakers(wave: np.ndarray, spans: Sequence[tuple[int, int]], cfg: Diarisation = Diarisation()) -> list[str] | None:
    """A speaker name per span (ms), or None where diarisation is unavailable or fails (said once, on stderr)."""
    reason = speaker_encoder.available()
    if reason is None:
        try:
            ms = SAMPLE_RATE // 1000
            labels = cluster(speaker_encoder.embed([wave[s * ms : e * ms] for s, e in spans]), cfg)
            return [f"S{k + 1}" for k in labels]
        except Exception as e:  # a broken model costs the speaker names, never the analysis
            reason = f"diarisation failed ({type(e).__name__}: {e}); utterances share one speaker"
    if reason not in _said:
        _said.add(reason)
        log.warning("%s", reason)
    return None
