"""The pairing protocol's building blocks: label-true draws, corruption variants, modality dropout."""

import numpy as np

from merc.data import pairing
from merc.pipeline.labels import LABELS


def pool(n_per_label=3, variants=3, dim=4):
    labels = np.repeat(np.arange(len(LABELS)), n_per_label)
    emb = np.stack([np.tile(labels[:, None], (1, dim)) + 100 * v for v in range(variants)]).astype(np.float32)
    return pairing.Pool(emb, np.zeros((variants, len(labels), 7), np.float32), labels, tuple(f"v{v}" for v in range(variants)))


def test_draws_keep_the_label_and_mix_variants():
    p = pool()
    want = np.random.default_rng(0).integers(0, len(LABELS), 500)
    emb, _ = p.draw(want, np.random.default_rng(1), p_clean=0.5)
    assert (emb[:, 0] % 100 == want).all()  # the item's label is the wanted one
    variant = emb[:, 0] // 100
    assert 0.4 < (variant == 0).mean() < 0.6 and set(variant.tolist()) == {0, 1, 2}


def test_subsets_are_disjoint_by_construction_and_missing_labels_are_refused():
    p = pool()
    a = p.subset(np.arange(0, len(p.labels), 2))
    assert len(a.labels) == (len(p.labels) + 1) // 2
    only_neutral = p.subset(np.flatnonzero(p.labels == 0))
    try:
        only_neutral.draw(np.array([1]), np.random.default_rng(0), 1.0)
    except ValueError as e:
        assert "joy" in str(e)
    else:
        raise AssertionError("drawing a label the pool lacks must fail")


def test_modality_dropout_never_leaves_an_utterance_empty():
    m = pairing.sample_masks(5000, np.random.default_rng(0), (0.1, 0.1, 0.1))
    assert (m.sum(1) >= 1).all()
    assert pairing.pattern_mask(2, ("text", "vision")).tolist() == [[1, 0, 1], [1, 0, 1]]


def test_corruption_variants_have_the_declared_count_and_shape():
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    assert len(pairing.audio_variants(wave, rng)) == len(pairing.AUDIO_VARIANTS)
    face = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)
    faces = pairing.face_variants(face, rng)
    assert len(faces) == len(pairing.FACE_VARIANTS) and all(f.shape == (48, 48) for f in faces)
