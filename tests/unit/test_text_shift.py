"""Text from another source: the shift score flags it, and the served posterior leans off its words."""

import numpy as np
import pytest
from conftest import REPO

from merc.data.ravdess import STATEMENTS
from merc.models import tiers
from merc.models.predictor import FusionPredictor
from merc.models.text_encoder import TextEncoder
from merc.pipeline import calibration as cal
from merc.pipeline import text_context, text_shift
from merc.pipeline.labels import LABELS

MODELS = REPO / "model_repository"


def gaussian(rng, n, scales):
    return rng.normal(size=(n, len(scales))) * scales


SCALES = np.geomspace(3.0, 0.05, 24)  # a spectrum like an embedding's: a few wide directions, many narrow


def test_held_out_text_from_the_same_source_is_left_alone_and_far_text_is_distrusted():
    rng = np.random.default_rng(0)
    shift = text_shift.fit(gaussian(rng, 4000, SCALES), gaussian(rng, 2000, SCALES), "t", rank=8)
    same = shift.weight(gaussian(rng, 4000, SCALES))
    assert 0.003 < np.mean(same > 0) < 0.03  # the ramp starts at the held-out text's 99th percentile
    # Off along the narrowest direction the model keeps: small in Euclidean terms, far in the source's.
    off = gaussian(rng, 200, SCALES)
    off[:, 7] += 40 * SCALES[7]
    assert (shift.weight(off) == 1).all()
    ray = np.outer(np.linspace(0, 60, 30), np.eye(24)[7] * SCALES[7])
    assert (np.diff(shift.weight(ray)) >= 0).all() and shift.weight(ray)[0] == 0


def test_a_fit_survives_its_file_and_a_file_for_other_text_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    shift = text_shift.fit(gaussian(rng, 1000, SCALES), gaussian(rng, 500, SCALES), "text-v1", rank=8)
    shift.save(tmp_path / text_shift.FILE)
    back = text_shift.TextShift.load(tmp_path / text_shift.FILE, 24)
    x = gaussian(rng, 50, SCALES) * 3
    np.testing.assert_allclose(back.weight(x), shift.weight(x), atol=1e-4)
    assert back.text_encoder == "text-v1"
    with pytest.raises(ValueError, match="24-d text, the fusion takes 384"):
        text_shift.TextShift.load(tmp_path / text_shift.FILE, 384)
    with pytest.raises(ValueError, match="cannot fit"):
        text_shift.fit(gaussian(rng, 30, SCALES), gaussian(rng, 30, SCALES), "t", rank=8)


def test_mixing_moves_the_posterior_and_the_threshold_toward_what_is_known_without_the_words():
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.1, 0.8])
    assert text_shift.mix(p, 0.9, q, 0.8, 0.0) == (pytest.approx(p), pytest.approx(0.9))
    mixed, threshold = text_shift.mix(p, 0.9, q, 0.8, 0.25)
    np.testing.assert_allclose(mixed, 0.75 * p + 0.25 * q)
    assert threshold == pytest.approx(0.875)
    alone, threshold = text_shift.mix(p, 0.9, None, 0.0, 1.0)  # the text was all there was
    np.testing.assert_allclose(alone, 1 / 3)
    assert threshold == 1.0 and cal.prediction_set(alone, threshold) == [0, 1, 2]


@pytest.mark.parametrize("tier", tiers.TIERS)
def test_each_tier_ships_a_shift_fitted_in_its_own_text_encoders_space(tier):
    folder = tiers.folder(MODELS / "fusion" / "1", tier)
    predictor = FusionPredictor(folder)
    text = tiers.folder(MODELS / "text_encoder" / "1", tier)
    assert predictor.text_shift is not None
    assert predictor.text_shift.text_encoder == TextEncoder.from_repository(text).version
    assert text_shift.FILE in (folder / "SHA256SUMS").read_text()


def test_read_sentences_from_another_corpus_are_flagged_by_the_shipped_model():
    # RAVDESS's actors read two neutral sentences in eight emotions: not what MELD's dialogue sounds like.
    turns = [(f"actor {i % 2}", STATEMENTS["01" if i % 3 else "02"]) for i in range(6)]
    texts, contexts = zip(*(text_context.encoder_inputs(said, ctx, 10_000)
                            for (_, said), ctx in zip(turns, text_context.dialogue_contexts(turns), strict=True)), strict=True)
    encoder = TextEncoder.from_repository(MODELS / "text_encoder" / "1")
    shift = FusionPredictor(MODELS / "fusion" / "1").text_shift
    assert (shift.weight(encoder.encode(list(texts), list(contexts))) > 0).all()


def inputs(predictor: FusionPredictor, text: np.ndarray, mask) -> dict[str, np.ndarray]:
    shapes, n = predictor.input_shapes, len(text)
    rng = np.random.default_rng(2)
    out = {name: rng.normal(size=(n, *shape)).astype(np.float32) for name, shape in shapes.items()}
    out["TEXT"] = text.astype(np.float32)
    out["MODALITY_MASK"] = np.array([mask] * n, np.float32)
    out["QUALITY"][:] = 0.5
    out["SPEAKER"] = np.zeros((n, 1), np.int64)
    out["CTX_SPEAKER"] = np.zeros((n, shapes["CTX_SPEAKER"][0]), np.int64)
    out["CTX_VALID"] = np.zeros((n, shapes["CTX_VALID"][0]), np.float32)
    return out


def test_the_served_posterior_leans_off_far_text_onto_the_voice_and_leaves_familiar_text_alone():
    predictor = FusionPredictor(MODELS / "fusion" / "1")
    shift = predictor.text_shift
    familiar = shift.mean[None]
    far = shift.mean + 3 * (shift.start + shift.spread) * np.sqrt(shift.variances[-1]) * shift.directions[:, -1]
    both = inputs(predictor, np.stack([familiar[0], far]), [1, 1, 0])
    guarded = predictor.infer(both)
    predictor.text_shift = None
    plain = predictor.infer(both)
    voice = dict(both, TEXT=np.zeros_like(both["TEXT"]), MODALITY_MASK=np.array([[0, 1, 0]] * 2, np.float32))
    voice["QUALITY"] = both["QUALITY"].copy()
    voice["QUALITY"][:, 0] = 0.0
    voice_alone = predictor.infer(voice)
    np.testing.assert_array_equal(guarded["PROBS"][0], plain["PROBS"][0])  # familiar text: as calibrated
    np.testing.assert_allclose(guarded["PROBS"][1], voice_alone["PROBS"][1], atol=1e-6)  # far text: the voice's say
    np.testing.assert_array_equal(guarded["IN_SET"][1], voice_alone["IN_SET"][1])
    np.testing.assert_array_equal(guarded["LOGITS"], plain["LOGITS"])  # the model's own output is untouched


def test_far_text_alone_says_it_does_not_know():
    predictor = FusionPredictor(MODELS / "fusion" / "1")
    shift = predictor.text_shift
    far = shift.mean + 3 * (shift.start + shift.spread) * np.sqrt(shift.variances[-1]) * shift.directions[:, -1]
    out = predictor.infer(inputs(predictor, far[None], [1, 0, 0]))
    np.testing.assert_allclose(out["PROBS"][0], 1 / len(LABELS), atol=1e-6)
    assert out["IN_SET"][0].all()


def test_an_event_says_how_much_of_its_words_were_distrusted_and_the_store_keeps_it(tmp_path):
    from merc.analyze import manifest
    from merc.analyze.embedded import EmbeddedPipeline

    pipeline = EmbeddedPipeline(db_path=str(tmp_path / "merc.db"))
    try:
        said = [STATEMENTS["01"], STATEMENTS["02"], STATEMENTS["01"]]
        results = [pipeline.analyze_line(manifest.Utterance(line=i + 1, conversation="read", utterance=i,
                                                            speaker=f"actor {i % 2}", text=t)).to_json()
                   for i, t in enumerate(said)]
        assert all(r["text_shift"] > 0 for r in results)
        assert all(len(r["prediction_set"]) == len(LABELS) for r in results)  # text alone and distrusted: every label
        stored = pipeline.store.result(pipeline.settings.tenant, "read", 2)
        assert stored.text_shift == pytest.approx(results[2]["text_shift"], abs=1e-6)
    finally:
        pipeline.close()
