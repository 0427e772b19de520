"""Text from a source the fusion never learned from: how far it lies, and how far to trust it.

Calibration (merc.pipeline.calibration) holds on data like the development set it was fitted on.
Words from elsewhere can sit far from everything the fusion was trained on, and there the text
expert's confidence means little: RAVDESS actors say two lexically neutral sentences in eight
emotions, and the text pattern calls them "neutral" with 70 % confidence and 20 % accuracy
(bench/results/calibration_by_source.md).

The shift score is the Mahalanobis distance of the adapted text embedding (the fusion's TEXT input)
to the training text, under a probabilistic-PCA Gaussian: ``RANK`` principal directions with their
own variances and one variance for the rest, fitted on MELD's fit split. Its quantiles on held-out
in-source text (MELD dev, the calibration data) set the ramp of the weight ``w`` given to distrust:
0 up to the 99th percentile, so 1 % of in-source utterances are touched at all, rising to 1 one
(median-to-99th-percentile) spread beyond it. No shifted source sets either end.

Distrust means mixing: the posterior becomes (1 - w) x the one with the text + w x the one the fusion
gives without it (the other modalities', or uniform when the text was alone), and the conformal
threshold moves the same way, so the prediction set widens toward the other modalities' set or every
label. An utterance whose words are unlike anything seen leans on the voice and face, as when a
camera drops, instead of on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "text_shift.safetensors"
RANK = 64  # principal directions kept: as separating as the full covariance here, at a sixth of its size
START_QUANTILE = 0.99
# Below this many rows a covariance of the text's size is not worth fitting,
MIN_ROWS_PER_DIM = 2
# nor a 99th percentile worth reading.
MIN_HELDOUT = 100


@dataclass(frozen=True)
class TextShift:
    mean: np.ndarray  # [D]
    directions: np.ndarray  # [D, R], orthonormal columns
    variances: np.ndarray  # [R] along them
    residual_variance: float  # per dimension, in the rest of the space
    start: float  # distance where distrust begins: START_QUANTILE of held-out in-source text
    spread: float  # that quantile minus the median: the ramp's length
    text_encoder: str  # the embedding space it was fitted in

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, text: np.ndarray) -> np.ndarray:
        """[B, D] embeddings -> [B] Mahalanobis distances."""
        z = np.asarray(text, dtype=np.float64) - self.mean
        along = z @ self.directions
        rest = np.maximum((z * z).sum(1) - (along * along).sum(1), 0.0)
        return np.sqrt((along * along / self.variances).sum(1) + rest / self.residual_variance)

    def weight(self, text: np.ndarray) -> np.ndarray:
        """[B, D] -> [B] in [0, 1]: how much of the text's say to take away."""
        return np.clip((self.distance(text) - self.start) / self.spread, 0.0, 1.0)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        # C order explicitly: eigh's vectors are Fortran-ordered, and the file holds a buffer, not strides.
        arrays = {"mean": self.mean, "directions": self.directions, "variances": self.variances}
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()},
                  str(path), metadata={"residual_variance": repr(self.residual_variance), "start": repr(self.start),
                                       "spread": repr(self.spread), "text_encoder": self.text_encoder})

    @classmethod
    def load(cls, path: Path, dim: int) -> TextShift:
        """Read a fitted shift; ``dim`` is the fusion's text size, which it must match."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k).astype(np.float64) for k in ("mean", "directions", "variances")}
        shift = cls(arrays["mean"], arrays["directions"], arrays["variances"], float(meta["residual_variance"]),
                    float(meta["start"]), float(meta["spread"]), meta["text_encoder"])
        r = shift.variances.shape[0]
        if shift.mean.shape != (dim,) or shift.directions.shape != (dim, r):
            raise ValueError(f"{path}: fitted for {shift.mean.shape[0]}-d text, the fusion takes {dim}")
        if not (shift.spread > 0 and shift.residual_variance > 0 and (shift.variances > 0).all()):
            raise ValueError(f"{path}: spread and variances must be positive")
        return shift


def fit(train: np.ndarray, heldout: np.ndarray, text_encoder: str, rank: int = RANK) -> TextShift:
    """The Gaussian from ``train`` embeddings, the ramp from ``heldout`` ones (text it was not fitted on)."""
    train = np.asarray(train, dtype=np.float64)
    d = train.shape[1]
    if len(train) < MIN_ROWS_PER_DIM * d or rank >= d or len(heldout) < MIN_HELDOUT:
        raise ValueError(f"{len(train)} rows of {d}-d text and {len(heldout)} held out cannot fit a rank-{rank} shift model")
    mean = train.mean(0)
    values, vectors = np.linalg.eigh(np.cov(train - mean, rowvar=False))
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    residual = float(max(values[rank:].mean(), 1e-12))
    shift = TextShift(mean, vectors[:, :rank], np.maximum(values[:rank], residual), residual, 0.0, 1.0, text_encoder)
    median, start = np.quantile(shift.distance(heldout), [0.5, START_QUANTILE])
    return TextShift(shift.mean, shift.directions, shift.variances, residual, float(start),
                     float(max(start - median, 1e-6)), text_encoder)


def mix(probs: np.ndarray, threshold: float, without: np.ndarray | None, threshold_without: float,
        w: float) -> tuple[np.ndarray, float]:
    """One utterance's posterior and conformal threshold with its text's say reduced by ``w``.

    ``without``: the posterior the fusion gives with the text masked, at its own pattern's calibration;
    None when the text was the only modality (then uniform, with a threshold that admits every label)."""
    if without is None:
        without, threshold_without = np.full_like(probs, 1.0 / len(probs)), 1.0
    return (1.0 - w) * probs + w * without, (1.0 - w) * threshold + w * threshold_without
