"""Confidence that can be trusted: temperature scaling, calibration error, conformal sets.

- Temperature scaling (Guo et al. 2017): one scalar T > 0 dividing the logits,
  fitted by minimising NLL. It never changes the arg-max, only the confidence.
- ECE with equal-width confidence bins (15 by default), NLL and the multi-class Brier score.
- Split conformal prediction (Vovk; Angelopoulos & Bates 2021) with the score
  1 - p(true label): on exchangeable data the set {k : 1 - p_k <= q} contains the
  true label with probability >= 1 - alpha, q being the finite-sample-corrected quantile.

Pure numpy; the temperature fit is a bounded 1-D search, which is exact enough and deterministic.
"""

from __future__ import annotations

import math

import numpy as np

from merc.pipeline.labels import MODALITIES

DEFAULT_COVERAGE = 0.90


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> float:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, None)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier: mean over samples of the squared distance to the one-hot label (range 0..2)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels, dtype=np.int64)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence, equal-width bins on (0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur for a max.
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def ece_floor(probs: np.ndarray, bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would still show on this many examples.

    Labels are drawn from ``probs`` themselves (calibrated by construction), so what remains is
    finite-sample noise: a measured ECE near this floor cannot be told from perfect calibration.
    """
    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(axis=1)
    cum[:, -1] = 1.0
    return float(np.mean([ece(probs, (rng.random((len(probs), 1)) > cum).sum(axis=1), bins) for _ in range(draws)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0, iters: int = 100) -> float:
    """T minimising NLL(softmax(logits / T)), by golden-section search on log T.

    NLL as a function of 1/T is convex (log-sum-exp of a linear function minus a linear term),
    hence unimodal in log T, so the bracketing search finds the global minimum inside [lo, hi].
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        return float(-_log_softmax(logits / math.exp(log_t))[rows, labels].mean())

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2))


def conformal_threshold(probs: np.ndarray, labels: np.ndarray, coverage: float = DEFAULT_COVERAGE) -> float:
    """Split-conformal threshold q on the score 1 - p(true label).

    q is the ceil((n + 1) * coverage)-th smallest score; with too few calibration points for the
    requested coverage the only valid answer is q = 1 (every label in every set).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.sort(1.0 - probs[np.arange(len(labels)), labels])
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return 1.0
    return float(scores[rank - 1])


def prediction_set(probs: np.ndarray, threshold: float) -> list[int]:
    """Label indices k with 1 - p_k <= threshold, most probable first; never empty (top label always in)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    order = np.argsort(-probs, kind="stable")
    chosen = [int(k) for k in order if 1.0 - probs[k] <= threshold]
    return chosen if chosen else [int(order[0])]


def empirical_coverage(probs: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray) -> tuple[float, float]:
    """(fraction of samples whose set holds the true label, mean set size); one threshold, or one per sample."""
    probs = np.asarray(probs, dtype=np.float64)
    sets = [prediction_set(p, t) for p, t in zip(probs, np.broadcast_to(threshold, len(probs)), strict=True)]
    hit = np.mean([int(y) in s for s, y in zip(sets, labels, strict=False)]) if len(sets) else 0.0
    size = np.mean([len(s) for s in sets]) if len(sets) else 0.0
    return float(hit), float(size)


# ---------------------------------------------------------------------------- per availability pattern

MIN_PATTERN_COUNT = 100  # fewer development examples than this: the pattern uses the pooled fit


def pattern_key(mask_row, names=("text", "audio", "vision")) -> str:
    """"text+audio" etc. for one modality mask row; "none" when nothing was present."""
    return "+".join(n for n, m in zip(names, mask_row, strict=True) if m > 0.5) or "none"


def fit_patterns(logits: np.ndarray, labels: np.ndarray, patterns: list[str], coverage: float = DEFAULT_COVERAGE,
                 min_count: int = MIN_PATTERN_COUNT) -> dict:
    """Temperature and conformal threshold per modality-availability pattern, plus a pooled fallback.

    A text-only utterance and an all-three one are differently (over)confident, so one temperature
    for both would leave each miscalibrated. Patterns with too little data fall back to the pooled
    fit rather than to a noisy one of their own.
    """
    patterns = np.asarray(patterns)

    def fit(rows) -> dict:
        t = fit_temperature(logits[rows], labels[rows])
        return {"temperature": t, "threshold": conformal_threshold(softmax(logits[rows], t), labels[rows], coverage),
                "n": int(np.sum(rows) if rows.dtype == bool else len(rows))}

    out = {"coverage": coverage, "default": fit(np.ones(len(labels), bool)), "patterns": {}}
    for key in sorted(set(patterns.tolist())):
        rows = patterns == key
        if rows.sum() >= min_count:
            out["patterns"][key] = fit(rows)
    return out


def for_pattern(calibration: dict, key: str) -> dict:
    return calibration["patterns"].get(key, calibration["default"])


def fit_experts(expert_logits: np.ndarray, mask: np.ndarray, labels: np.ndarray, names=MODALITIES,
                min_count: int = MIN_PATTERN_COUNT) -> dict:
    """A temperature per modality expert ([N, M, C] logits), fitted on the rows where that modality is present.

    Events show each modality's own posterior beside the fused one (merc.v1.ModalityPosterior): those
    must be honest probabilities too, and each expert is over- or under-confident in its own way. An
    expert with fewer than ``min_count`` rows is left out (``expert_temperatures`` then uses 1).
    """
    out = {}
    for j, name in enumerate(names):
        rows = np.asarray(mask)[:, j] > 0.5
        if rows.sum() >= min_count:
            out[name] = {"temperature": fit_temperature(expert_logits[rows, j], labels[rows]), "n": int(rows.sum())}
    return out


def expert_temperatures(calibration: dict, names=MODALITIES) -> np.ndarray:
    """[M] temperatures in ``names`` order; 1 for an expert the calibration has no fit for."""
    experts = calibration.get("experts", {})
    return np.array([experts.get(n, {}).get("temperature", 1.0) for n in names], dtype=np.float64)
