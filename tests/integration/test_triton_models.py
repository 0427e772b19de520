"""Triton serves the same numbers as the in-process model code."""

import numpy as np
import pytest

from merc.inference import InferenceUnavailable
from merc.inference.local import LocalInference
from merc.inference.triton import TritonInference

pytestmark = pytest.mark.integration

TEXTS = ["Oh my God, this is amazing!", "I don't want to talk about it.", "", "Okay."]


@pytest.fixture(scope="module")
def clients(triton):
    return TritonInference(triton.triton_url), LocalInference()


def test_text_encoder_matches_in_process(clients):
    triton, local = clients
    batch = {"TEXT": np.array([[t.encode()] for t in TEXTS], dtype=object)}
    a, b = triton.infer("text_encoder", batch)["EMBEDDING"], local.infer("text_encoder", batch)["EMBEDDING"]
    assert a.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-4)


def test_text_encoder_reads_the_previous_utterance_the_same_way(clients):
    triton, local = clients
    batch = {"TEXT": np.array([[b"Really?"], [b"Really?"]], dtype=object),
             "CONTEXT": np.array([[b"I just won the lottery!"], [b"My dog died this morning."]], dtype=object)}
    a, b = triton.infer("text_encoder", batch)["EMBEDDING"], local.infer("text_encoder", batch)["EMBEDDING"]
    np.testing.assert_allclose(a, b, atol=1e-4)
    # The adapted encoder reads the same words differently after different context.
    assert not np.allclose(a[0], a[1], atol=1e-3)


def fusion_inputs(triton, n: int) -> dict[str, np.ndarray]:
    k, h = triton.input_shapes("fusion")["CTX_FUSED"]
    rng = np.random.default_rng(0)
    return {
        "TEXT": rng.normal(size=(n, 384)).astype(np.float32) / 20,
        "AUDIO": np.abs(rng.normal(size=(n, 128))).astype(np.float32),
        "VISION": np.abs(rng.normal(size=(n, 128))).astype(np.float32),
        "MODALITY_MASK": np.array([[1, 0, 0], [1, 1, 1], [0, 1, 1]] * (n // 3 + 1), np.float32)[:n],
        "QUALITY": rng.random((n, 7)).astype(np.float32),
        "SPEAKER": (np.arange(n) % 2).astype(np.int64)[:, None],
        "CTX_FUSED": rng.normal(size=(n, k, h)).astype(np.float32),
        "CTX_SPEAKER": np.zeros((n, k), np.int64),
        "CTX_VALID": np.concatenate([np.zeros((n, k - 2)), np.ones((n, 2))], axis=1).astype(np.float32),
    }


def test_fusion_matches_in_process_and_is_a_distribution(clients):
    triton, local = clients
    inputs = fusion_inputs(triton, 3)
    a, b = triton.infer("fusion", inputs), local.infer("fusion", inputs)
    for name in ("PROBS", "SENTIMENT", "FUSED", "WEIGHTS", "IN_SET", "EXPERT_PROBS", "INCONGRUENCE", "TEXT_SHIFT"):
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(a["PROBS"].sum(1), 1.0, atol=1e-5)
    # Random vectors are no sentence's embedding: Triton's fusion distrusts them too (merc.pipeline.text_shift).
    has_text = inputs["MODALITY_MASK"][:, 0] > 0
    assert (a["TEXT_SHIFT"][has_text] > 0).all() and not a["TEXT_SHIFT"][~has_text].any()
    np.testing.assert_allclose(a["WEIGHTS"][0], [1, 0, 0], atol=1e-6)  # absent modalities weigh nothing
    assert triton.version("fusion") == local.version("fusion")


def test_a_batch_larger_than_the_models_max_batch_size_is_split(clients):
    """Fusion can release thousands of utterances in one step (after a restart); Triton takes 64 at most."""
    triton, local = clients
    inputs = fusion_inputs(triton, 150)
    a, b = triton.infer("fusion", inputs), local.infer("fusion", inputs)
    assert a["PROBS"].shape == (150, 7)
    np.testing.assert_allclose(a["PROBS"], b["PROBS"], atol=1e-4)


def test_unknown_model_is_reported_as_unavailable(clients):
    triton, _ = clients
    with pytest.raises(InferenceUnavailable, match="no_such_model"):
        triton.infer("no_such_model", {"X": np.zeros((1, 1), np.float32)})


def test_audio_encoder_matches_in_process(clients):
    triton, local = clients
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 2) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    wave = np.zeros((2, len(voiced)), np.float32)
    wave[0] = voiced + 0.01 * rng.normal(size=len(voiced)).astype(np.float32)
    wave[1, :16000] = voiced[:16000]
    inputs = {"WAVE": wave, "LENGTH": np.array([[len(voiced)], [16000]], np.int64)}
    a, b = triton.infer("audio_encoder", inputs), local.infer("audio_encoder", inputs)
    assert a["EMBEDDING"].shape == (2, 128)
    np.testing.assert_allclose(a["PROBS"], b["PROBS"], atol=1e-4)
    np.testing.assert_allclose(a["PROBS"].sum(1), 1.0, atol=1e-5)
    assert triton.version("audio_encoder") == local.version("audio_encoder")


def test_face_encoder_matches_in_process(clients):
    triton, local = clients
    rng = np.random.default_rng(2)
    faces = rng.integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    a, b = triton.infer("face_encoder", {"FACES": faces}), local.infer("face_encoder", {"FACES": faces})
    assert a["EMBEDDING"].shape == (3, 128)
    np.testing.assert_allclose(a["PROBS"], b["PROBS"], atol=1e-4)
    assert triton.version("face_encoder") == local.version("face_encoder")


def test_the_transcriber_hears_the_words_as_in_process(clients):
    import soundfile as sf
    from conftest import REPO

    from merc.media import transcription

    if (reason := transcription.available()) is not None:
        pytest.skip(reason)
    triton, local = clients
    wave, _ = sf.read(REPO / "examples" / "speech.flac", dtype="float32")
    batch = {"WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64)}
    a, b = triton.infer("transcriber", batch), local.infer("transcriber", batch)
    assert a["TEXT"][0][0] == b["TEXT"][0][0] == b"Thank you so much for calling. I am really happy to help you today."
    assert a["DETECTED_LANGUAGE"][0][0] == b"en"
    assert triton.version("transcriber") == local.version("transcriber")
