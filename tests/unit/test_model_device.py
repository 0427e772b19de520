"""The served models take the device Triton placed their instance on; on the CPU nothing changes."""

import numpy as np
import pytest
import torch
from conftest import REPO

from merc.models.encoders import AudioEmotionEncoder, FaceEmotionEncoder
from merc.models.predictor import FusionPredictor
from merc.models.text_encoder import TextEncoder

MODELS = REPO / "model_repository"
rng = np.random.default_rng(0)


def _fusion_inputs(shapes: dict[str, list[int]], b: int = 2) -> dict[str, np.ndarray]:
    inputs = {name: rng.standard_normal((b, *shape)).astype(np.float32) for name, shape in shapes.items()}
    inputs["MODALITY_MASK"] = np.array([[1, 1, 0], [1, 0, 1]], np.float32)
    inputs["SPEAKER"] = np.array([[0], [1]], np.int64)
    inputs["CTX_SPEAKER"] = rng.integers(0, 2, (b, *shapes["CTX_SPEAKER"])).astype(np.int64)
    inputs["CTX_VALID"] = np.ones((b, *shapes["CTX_VALID"]), np.float32)
    return inputs


CASES = {
    "audio_encoder": (AudioEmotionEncoder, lambda m: {"WAVE": rng.standard_normal((2, 8000)).astype(np.float32) * 0.1,
                                                      "LENGTH": np.array([[8000], [5000]], np.int64)}),
    "face_encoder": (FaceEmotionEncoder, lambda m: {"FACES": rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)}),
    "fusion": (FusionPredictor, lambda m: _fusion_inputs(m.input_shapes)),
    "text_encoder": (TextEncoder.from_repository, lambda m: {"TEXT": np.array([[b"Oh my God, you did it!"]], dtype=object),
                                                             "CONTEXT": np.array([[b"Chandler: I did it."]], dtype=object)}),
}


@pytest.mark.parametrize("name", CASES)
def test_a_cpu_device_gives_what_the_default_gives(name):
    build, make_inputs = CASES[name]
    default, on_cpu = build(MODELS / name / "1"), build(MODELS / name / "1", device=torch.device("cpu"))
    assert {p.device.type for p in on_cpu.model.parameters()} == {"cpu"}
    inputs = make_inputs(default)
    want, got = default.infer(inputs), on_cpu.infer(inputs)
    assert want.keys() == got.keys()
    for key in want:
        assert isinstance(got[key], np.ndarray) and got[key].dtype == want[key].dtype
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", ["audio_encoder", "face_encoder"])
def test_the_encoders_move_their_weights_to_the_device(name):
    # "meta" stands in for a GPU on a machine without one: the weights must follow the argument.
    build, _ = CASES[name]
    assert {p.device.type for p in build(MODELS / name / "1", device="meta").model.parameters()} == {"meta"}
