import numpy as np
import pytest

from merc.pipeline import calibration as cal


def test_temperature_fit_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    base = rng.normal(scale=3.0, size=(20000, 7))
    # Labels drawn from softmax(base); the model reports base * 2.5, i.e. overconfident by T = 2.5.
    p = cal.softmax(base)
    labels = np.array([rng.choice(7, p=row) for row in p])
    t = cal.fit_temperature(base * 2.5, labels)
    assert t == pytest.approx(2.5, rel=0.05)


def test_ece_of_hand_computed_cases():
    # Two samples in one bin (confidence 0.8), one right one wrong: |0.5 - 0.8| = 0.3.
    probs = np.array([[0.8, 0.2], [0.8, 0.2]])
    assert cal.ece(probs, np.array([0, 1])) == pytest.approx(0.3)
    # Confidence 0.6 and 0.9, both right: bins weigh 1/2 each: 0.5 * 0.4 + 0.5 * 0.1.
    probs = np.array([[0.6, 0.4], [0.1, 0.9]])
    assert cal.ece(probs, np.array([0, 1])) == pytest.approx(0.25)


def test_ece_is_near_zero_when_calibrated():
    rng = np.random.default_rng(1)
    p = cal.softmax(rng.normal(scale=2.0, size=(50000, 7)))
    labels = np.array([rng.choice(7, p=row) for row in p])
    assert cal.ece(p, labels) < 0.01


def test_nll_and_brier_on_known_values():
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    labels = np.array([0, 0])
    assert cal.nll(probs, labels) == pytest.approx(np.log(2) / 2)
    assert cal.brier(probs, labels) == pytest.approx((0.25 + 0.25 + 0) / 2)


def test_conformal_sets_cover_at_the_stated_level():
    rng = np.random.default_rng(2)
    p = cal.softmax(rng.normal(scale=1.5, size=(6000, 7)))
    labels = np.array([rng.choice(7, p=row) for row in p])
    q = cal.conformal_threshold(p[:3000], labels[:3000], coverage=0.9)
    covered, size = cal.empirical_coverage(p[3000:], labels[3000:], q)
    assert abs(covered - 0.9) < 0.02
    assert 1 <= size <= 7


def test_prediction_set_is_never_empty_and_ordered():
    probs = np.array([0.05, 0.6, 0.05, 0.2, 0.05, 0.03, 0.02])
    assert cal.prediction_set(probs, threshold=0.0) == [1]
    assert cal.prediction_set(probs, threshold=0.85) == [1, 3]
    assert cal.conformal_threshold(probs[None], np.array([1]), coverage=0.9) == 1.0  # too few points


def test_each_availability_pattern_gets_its_own_temperature():
    rng = np.random.default_rng(0)
    n = 3000
    labels = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), labels] += 2.0
    patterns = np.where(np.arange(n) % 2 == 0, "text", "text+audio")
    logits[patterns == "text+audio"] *= 3.0  # an overconfident pattern
    fit = cal.fit_patterns(logits, labels, list(patterns), coverage=0.9)
    t_text, t_both = fit["patterns"]["text"]["temperature"], fit["patterns"]["text+audio"]["temperature"]
    assert t_both == pytest.approx(3 * t_text, rel=0.15)
    assert cal.for_pattern(fit, "vision") is fit["default"]  # unseen pattern -> pooled fit
    assert cal.pattern_key([1, 0, 1]) == "text+vision" and cal.pattern_key([0, 0, 0]) == "none"


def test_rare_patterns_fall_back_to_the_pooled_fit():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(300, 3)), rng.integers(0, 3, 300)
    fit = cal.fit_patterns(logits, labels, ["text"] * 290 + ["audio"] * 10, min_count=100)
    assert set(fit["patterns"]) == {"text"}


def test_the_ece_floor_is_what_calibrated_probabilities_measure_and_shrinks_with_n():
    rng = np.random.default_rng(3)
    floors = []
    for n in (300, 3000):
        probs = cal.softmax(rng.normal(size=(n, 7)) * 2)
        floor = cal.ece_floor(probs, draws=100)
        # A sample whose labels really are drawn from the probabilities lands near the floor.
        drawn = np.array([rng.choice(7, p=row) for row in probs])
        assert abs(cal.ece(probs, drawn) - floor) < 0.03
        floors.append(floor)
    assert floors[1] < floors[0] / 2
    # Confident and wrong is far above the floor.
    sure = np.tile(np.eye(7)[0] * 0.94 + 0.01, (3000, 1))
    assert cal.ece(sure, np.full(3000, 1)) > 10 * cal.ece_floor(sure)
