"""Modality conflict: how much the per-modality posteriors disagree about one utterance.

"Great job" said with a tired sigh: text says joy, voice says sadness. The score is the mean
pairwise Jensen-Shannon divergence (base 2, so in [0, 1]) between the posteriors of the
modalities that were present; 0 with fewer than two.
"""

from __future__ import annotations

import numpy as np


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sum(np.where(p > 0, p * np.log2(np.clip(p, 1e-12, None) / np.clip(q, 1e-12, None)), 0.0), -1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    m = 0.5 * (p + q)
    return np.clip(0.5 * _kl(p, m) + 0.5 * _kl(q, m), 0.0, 1.0)


def score(expert_probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """expert_probs [B, M, C], mask [B, M] -> [B] in [0, 1]."""
    expert_probs = np.asarray(expert_probs, dtype=np.float64)
    present = np.asarray(mask) > 0.5
    b, m, _ = expert_probs.shape
    total, pairs = np.zeros(b), np.zeros(b)
    for i in range(m):
        for j in range(i + 1, m):
            both = present[:, i] & present[:, j]
            total += np.where(both, js_divergence(expert_probs[:, i], expert_probs[:, j]), 0.0)
            pairs += both
    return np.where(pairs > 0, total / np.maximum(pairs, 1), 0.0)
