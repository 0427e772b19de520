"""Events that explain themselves: each modality's own calibrated posterior beside the fused one."""

import json

import numpy as np
import pytest
from conftest import REPO

from merc.cli import _print_table
from merc.models.predictor import FusionPredictor
from merc.pipeline import calibration as cal
from merc.pipeline.events import to_event
from merc.pipeline.labels import LABELS, MODALITIES
from merc.store import Store
from merc.v1 import common_pb2
from unit.test_store import result


def test_an_overconfident_expert_gets_a_temperature_above_one_and_a_scarce_one_none():
    rng = np.random.default_rng(0)
    n, c = 2000, len(LABELS)
    truth = rng.normal(size=(n, c))
    labels = np.array([rng.choice(c, p=np.exp(r) / np.exp(r).sum()) for r in truth])
    logits = np.stack([3 * truth, truth, truth], axis=1)  # text 3x overconfident; the others exact
    mask = np.ones((n, 3))
    mask[50:, 2] = 0  # vision present on 50 rows only
    fit = cal.fit_experts(logits, mask, labels)
    assert fit["text"]["temperature"] == pytest.approx(3, rel=0.15)
    assert fit["audio"]["temperature"] == pytest.approx(1, rel=0.15)
    assert "vision" not in fit and fit["audio"]["n"] == n
    assert list(cal.expert_temperatures({"experts": fit})) == [fit["text"]["temperature"], fit["audio"]["temperature"], 1.0]
    assert list(cal.expert_temperatures({})) == [1.0, 1.0, 1.0]  # a calibration from before: the raw softmax


def test_the_shipped_fusion_model_serves_each_expert_at_its_temperature():
    predictor = FusionPredictor(REPO / "model_repository/fusion/1")
    temperatures = cal.expert_temperatures(predictor.calibration)
    assert set(predictor.calibration["experts"]) == set(MODALITIES) and not np.allclose(temperatures, 1.0)
    rng = np.random.default_rng(1)
    shapes = predictor.input_shapes
    inputs = {name: rng.normal(size=(4, *shape)).astype(np.float32) for name, shape in shapes.items()}
    inputs["MODALITY_MASK"] = np.array([[1, 1, 0]] * 4, np.float32)
    inputs["SPEAKER"] = np.zeros((4, 1), np.int64)
    inputs["CTX_SPEAKER"] = np.zeros((4, shapes["CTX_SPEAKER"][0]), np.int64)
    inputs["CTX_VALID"] = np.zeros((4, shapes["CTX_VALID"][0]), np.float32)
    calibrated = predictor.infer(inputs)["EXPERT_PROBS"].astype(np.float64)
    predictor._expert_t = np.ones(3)
    raw = predictor.infer(inputs)["EXPERT_PROBS"].astype(np.float64)
    np.testing.assert_allclose(calibrated[:, :2].sum(-1), 1, atol=1e-5)
    assert not calibrated[:, 2].any()  # an absent modality has no posterior
    for j in range(2):  # softmax(z / T) from the raw softmax's log (z up to a constant)
        z = np.log(raw[:, j]) / temperatures[j]
        np.testing.assert_allclose(calibrated[:, j], np.exp(z) / np.exp(z).sum(-1, keepdims=True), atol=1e-5)


def test_posteriors_go_from_result_to_store_to_event_in_modality_order(tmp_path):
    r = result(0)
    r.modalities, r.weights = ["text", "audio"], [0.4, 0.6]
    r.posteriors = {"audio": [0.1, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0], "text": [0.8, 0.2, 0, 0, 0, 0, 0]}
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.migrate()
    store.upsert([r])
    (back,) = store.conversation("t", "c")
    assert back.posteriors == r.posteriors
    event = to_event(back)
    assert [p.modality for p in event.modality_posteriors] == [common_pb2.MODALITY_TEXT, common_pb2.MODALITY_AUDIO]
    assert list(event.modality_posteriors[1].probabilities) == pytest.approx(r.posteriors["audio"])


def test_explain_shows_what_each_modality_predicted_alone(capsys):
    row = {"conversation": "c", "utterance": 0, "speaker": "A", "label": "anger", "confidence": 0.7, "prediction_set": ["anger"],
           "sentiment": "negative", "modalities": ["text", "audio"], "weights": {"text": 0.3, "audio": 0.7}, "degraded": False,
           "mood": {"speaker": {"valence": -0.5, "arousal": 0.5}},
           "posteriors": {"text": {**dict.fromkeys(LABELS, 0.0), "neutral": 0.9, "joy": 0.1},
                          "audio": {**dict.fromkeys(LABELS, 0.0), "anger": 0.8, "neutral": 0.2}}}
    _print_table([row], explain=True)
    out = capsys.readouterr().out
    assert "each alone" in out and "text neutral 0.90" in out and "audio anger 0.80" in out
    _print_table([row])
    assert "each alone" not in capsys.readouterr().out


def test_analyze_json_carries_the_posteriors(tmp_path, capsys):
    from merc.cli import main

    (tmp_path / "m.jsonl").write_text(json.dumps({"speaker": "A", "text": "I can't believe you did this to me!"}) + "\n")
    assert main(["analyze", str(tmp_path / "m.jsonl"), "--json", "--threads", "1"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert list(row["posteriors"]) == ["text"] and list(row["posteriors"]["text"]) == list(LABELS)
    assert sum(row["posteriors"]["text"].values()) == pytest.approx(1, abs=1e-3)
