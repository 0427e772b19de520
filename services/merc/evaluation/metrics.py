"""Classification metrics for the evaluation protocol (weighted F1, macro F1, accuracy, per-class recall, ECE), numpy only.

Conventions follow scikit-learn so figures compare with the literature: F1 of a
class with no true positives is 0; weighted F1 weights each class by its support;
macro F1 averages over the classes present in either the labels or the predictions.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1, recall, support


def per_class_recall(y_true, y_pred, n_classes: int) -> np.ndarray:
    return _per_class(confusion_matrix(y_true, y_pred, n_classes))[1]


def weighted_f1(y_true, y_pred, n_classes: int) -> float:
    f1, _, support = _per_class(confusion_matrix(y_true, y_pred, n_classes))
    return float((f1 * support).sum() / support.sum()) if support.sum() else 0.0


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, n_classes)
    f1, _, _ = _per_class(cm)
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def summary(y_true, y_pred, n_classes: int) -> dict[str, float | list[float]]:
    """The protocol's headline figures in one dict (JSON-friendly)."""
    return {
        "weighted_f1": weighted_f1(y_true, y_pred, n_classes),
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "accuracy": accuracy(y_true, y_pred),
        "recall": per_class_recall(y_true, y_pred, n_classes).tolist(),
    }
