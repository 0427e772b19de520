"""Who spoke each utterance of a bare recording: speaker embeddings per utterance, clustered per recording.

Each utterance's voice becomes a d-vector (merc.models.speaker_encoder). Utterances are then merged
bottom-up, closest pair of groups first (average cosine similarity between their members), until no
two groups are more alike than ``threshold`` or, when the caller knows how many people spoke, until
that many are left. With the count known, the recording's mean vector is taken off every utterance's
first: what all its voices share (the room, the line, the words) then stops pulling them together.
That cannot decide whether there is more than one voice (a monologue's utterances, centred, look like
several people), so with the count unknown the vectors are used as they are. Speakers are named in
order of first appearance ("S1", "S2", ...), so the names mean something within one recording only,
like a transcript's speaker turns.

The threshold was chosen on recordings built from the training actors of RAVDESS and is reported on
the validation actors (bench/results/diarisation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from merc.media import SAMPLE_RATE
from merc.models import speaker_encoder

log = logging.getLogger(__name__)
_said: set[str] = set()


@dataclass(frozen=True)
class Diarisation:
    # Average cosine similarity above which two groups of utterances are one speaker (bench/diarisation.py).
    threshold: float = 0.56
    speakers: int | None = None  # the number of people, when known: clusters down to exactly that many
    min_turn_ms: int = 600  # segmentation splits at a voice change only between pieces at least this long
    # ...comparing this much on either side of the pause: the voices next to it, at a cost that does not grow
    # with the utterance (a long run of short pauses would otherwise be embedded again at every pause).
    turn_context_ms: int = 3000


def cluster(embeddings: np.ndarray, cfg: Diarisation = Diarisation()) -> list[int]:
    """Average-linkage agglomerative clustering of unit vectors: a cluster index per row, numbered by first row.

    scipy's linkage takes O(n^2) time and memory in n utterances. n is bounded by the recording cap: segmentation
    keeps speech of 300 ms or more between pauses of 700 ms or more, so at most one utterance a second, and
    MERC_MAX_RECORDING_SECONDS (2 h) gives at most 7,200: ~200 MB of pairwise distances, seconds of compute.
    """
    n = len(embeddings)
    if n < 2:
        return [0] * n
    x = np.asarray(embeddings, dtype=np.float64)
    if cfg.speakers is not None and cfg.speakers > 1:
        x = x - x.mean(axis=0)
    # Average cosine distance between groups = 1 - their average similarity (the rows are unit vectors, or
    # centred ones, whose cosine scipy normalises itself).
    # A row left at zero by centring has no direction: as far from everyone as cosine allows, not NaN.
    tree = linkage(np.nan_to_num(pdist(x, metric="cosine"), nan=1.0), method="average")
    if cfg.speakers is not None:
        flat = fcluster(tree, t=cfg.speakers, criterion="maxclust")
    else:
        flat = fcluster(tree, t=1.0 - cfg.threshold, criterion="distance")
    order = {k: i for i, k in enumerate(dict.fromkeys(flat.tolist()))}
    return [order[k] for k in flat.tolist()]


def same_voice(wave: np.ndarray, cfg: Diarisation = Diarisation()) -> Callable[[tuple[int, int], tuple[int, int]], bool] | None:
    """For segmentation: whether a speech segment (sample range) sounds like the end of the utterance before it,
    or None where diarisation is unavailable. Either side shorter than ``min_turn_ms`` counts as the same voice: a
    d-vector of a fraction of a second says little, and a breath or a "yes" is not worth a wrong split."""
    if speaker_encoder.available() is not None:
        return None
    shortest = SAMPLE_RATE * cfg.min_turn_ms // 1000
    context = SAMPLE_RATE * cfg.turn_context_ms // 1000

    def same(utterance: tuple[int, int], segment: tuple[int, int]) -> bool:
        if utterance[1] - utterance[0] < shortest or segment[1] - segment[0] < shortest:
            return True
        before = wave[max(utterance[0], utterance[1] - context) : utterance[1]]
        after = wave[segment[0] : min(segment[1], segment[0] + context)]
        a, b = speaker_encoder.embed([before, after])
        return float(a @ b) >= cfg.threshold

    return same


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
