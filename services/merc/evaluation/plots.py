"""Report figures as PNG: reliability diagrams and confusion matrices (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from merc.pipeline.calibration import ece
from merc.pipeline.labels import LABELS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or CI
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(path: Path, curves: dict[str, np.ndarray], labels: np.ndarray, title: str, bins: int = 15) -> Path:
    """One line per named probability set: accuracy against mean confidence per confidence bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, probs in curves.items():
        conf, correct = probs.max(1), (probs.argmax(1) == labels)
        which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            sel = which == b
            if sel.sum() >= 5:  # a bin of two points says nothing
                xs.append(conf[sel].mean())
                ys.append(correct[sel].mean())
        ax.plot(xs, ys, marker="o", ms=3, label=f"{name} (ECE {ece(probs, labels, bins):.3f})")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion_matrix(path: Path, cm: np.ndarray, title: str) -> Path:
    """Row-normalised (each true label's recall spread over predictions), counts in the cells."""
    plt = _pyplot()
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(LABELS)), LABELS, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
