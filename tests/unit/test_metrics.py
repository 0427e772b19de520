import numpy as np
import pytest

from merc.evaluation import metrics


def test_f1_scores_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    # class 0: P=1, R=2/3, F1=0.8; class 1: P=1/2, R=1/2, F1=0.5; class 2: P=1/2, R=1, F1=2/3
    assert metrics.macro_f1(y, p, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics.weighted_f1(y, p, 3) == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert metrics.accuracy(y, p) == pytest.approx(4 / 6)
    np.testing.assert_allclose(metrics.per_class_recall(y, p, 3), [2 / 3, 0.5, 1.0])
    cm = metrics.confusion_matrix(y, p, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_absent_class_counts_zero_not_nan():
    y = np.array([0, 0])
    p = np.array([0, 1])
    assert np.isfinite(metrics.macro_f1(y, p, 3))
