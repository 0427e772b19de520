"""The ONNX exports (merc.models.onnx_export) answer like the torch models they come from, and the served
classes pick ONNX Runtime only for an export of the weights they loaded (merc.models.graph_runner).

Exported once per module with `merc onnx`'s function into a copy of the committed repository, from its
weights; the text transformer's base comes from the installed package.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import REPO

from merc.models import graph_runner, onnx_export, tiers
from merc.models.audio_cnn import AudioCNN
from merc.models.encoders import AudioEmotionEncoder, FaceEmotionEncoder
from merc.models.graphs import AudioGraph, FaceGraph, FusionGraph, TextGraph
from merc.models.predictor import FusionPredictor
from merc.models.text_encoder import TextEncoder, tokenize

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

MODELS = REPO / "model_repository"
# float32 through different kernels (ORT's fused convolutions and attention): ~1e-6 measured
# (bench/results/onnx.md); 1e-4 still tells any other weights apart (test_the_tolerance_tells_weights_apart).
ATOL = 1e-4


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A copy of model_repository/ with every model's model.onnx written by export_repository."""
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    shutil.copytree(MODELS, repo, ignore=shutil.ignore_patterns("__pycache__", graph_runner.FILENAME))
    written = onnx_export.export_repository(repo)
    tiered = [f"{name}/1/{tier}" for name in tiers.MODELS for tier in tiers.TIERS if tier != tiers.DEFAULT]
    assert sorted(str(p.parent.relative_to(repo)) for p in written) == sorted([f"{n}/1" for n in onnx_export.EXPORTS] + tiered)
    return repo


@pytest.fixture(scope="module")
def torch_only(tmp_path_factory):
    """The committed repository without any export (a checkout may hold `merc onnx`'s): served by torch."""
    repo = tmp_path_factory.mktemp("plain") / "model_repository"
    shutil.copytree(MODELS, repo, ignore=shutil.ignore_patterns("__pycache__", graph_runner.FILENAME))
    return repo


def _onnx(repo, name: str, graph, tier: str = tiers.DEFAULT) -> graph_runner.OnnxRunner:
    return graph_runner.OnnxRunner(tiers.folder(repo / name / "1", tier) / graph_runner.FILENAME, graph.INPUTS, threads=1)


def _assert_close(torch_out: dict, onnx_out: dict) -> None:
    assert torch_out.keys() == onnx_out.keys()
    for name in torch_out:
        assert torch_out[name].shape == onnx_out[name].shape, name
        np.testing.assert_allclose(onnx_out[name], torch_out[name], rtol=0, atol=ATOL, err_msg=name)


def _faces(b: int) -> np.ndarray:
    return np.random.default_rng(b).integers(0, 256, (b, 48, 48), dtype=np.uint8)


def _fusion_inputs(model, b: int) -> list[np.ndarray]:
    torch.manual_seed(b)
    return [t.numpy() for t in onnx_export.fusion_example(model, b)]


@pytest.mark.parametrize("batch", [1, 5])
def test_face_export_matches_torch(repository, batch):
    graph = FaceGraph(FaceEmotionEncoder(MODELS / "face_encoder" / "1").model)
    faces = _faces(batch)
    _assert_close(graph_runner.TorchRunner(graph)(faces), _onnx(repository, "face_encoder", graph)(faces))


@pytest.mark.parametrize(("batch", "frames"), [(1, 301), (3, 57), (2, 1000)])
def test_audio_export_matches_torch_at_any_length(repository, batch, frames):
    graph = AudioGraph(AudioEmotionEncoder(MODELS / "audio_encoder" / "1").model)
    mel = np.random.default_rng(frames).standard_normal((batch, graph.cnn.cfg.n_mels, frames)).astype(np.float32)
    _assert_close(graph_runner.TorchRunner(graph)(mel), _onnx(repository, "audio_encoder", graph)(mel))


@pytest.mark.parametrize("batch", [1, 7])
def test_fusion_export_matches_torch(repository, batch):
    # Batch 7 cycles through every mask row fusion_example has, the all-absent one included.
    graph = FusionGraph(FusionPredictor(MODELS / "fusion" / "1").model)
    inputs = _fusion_inputs(graph.model, batch)
    _assert_close(graph_runner.TorchRunner(graph)(*inputs), _onnx(repository, "fusion", graph)(*inputs))


@pytest.mark.parametrize("tier", tiers.TIERS)
@pytest.mark.parametrize("contexts", [None, ["", "[other] What time is it? | [same] I was out all day.", "[same] Ok."]])
def test_text_export_matches_torch_at_any_length(repository, contexts, tier):
    encoder = TextEncoder.from_repository(tiers.folder(MODELS / "text_encoder" / "1", tier))
    graph = TextGraph(encoder.model, encoder.base.token_types)
    texts = ["Hi.", "You are not going to believe what just happened to me on the way over here!", "No way."]
    for rows in (slice(0, 1), slice(0, 3)):
        batch = tokenize(encoder.tokenizer, texts[rows], contexts[rows] if contexts else None, encoder.max_length)
        ids = [batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")]
        _assert_close(graph_runner.TorchRunner(graph)(*ids), _onnx(repository, "text_encoder", graph, tier)(*ids))


def test_the_tolerance_tells_weights_apart(repository):
    """The audio export against a CNN of the same shape with other (fresh) weights: far outside ATOL."""
    torch.manual_seed(0)
    other = AudioGraph(AudioCNN(AudioEmotionEncoder(MODELS / "audio_encoder" / "1").model.cfg))
    mel = np.random.default_rng(0).standard_normal((2, other.cnn.cfg.n_mels, 301)).astype(np.float32)
    with pytest.raises(AssertionError):
        _assert_close(graph_runner.TorchRunner(other)(mel), _onnx(repository, "audio_encoder", other)(mel))


def test_served_models_run_their_export_and_answer_as_torch(repository, torch_only):
    """Through the served classes (what Triton's adapters and embedded mode call), calibration included."""
    rng = np.random.default_rng(1)
    wave = rng.standard_normal((2, 16000 * 2)).astype(np.float32) * 0.1
    cases = {
        "face_encoder": (FaceEmotionEncoder, {"FACES": _faces(4)}),
        "audio_encoder": (AudioEmotionEncoder, {"WAVE": wave, "LENGTH": np.array([[32000], [9000]])}),
        "fusion": (FusionPredictor, None),
        "text_encoder": (TextEncoder.from_repository, {"TEXT": np.array([[b"Really?"], [b"That is great news, thanks!"]],
                                                                        dtype=object),
                                                       "CONTEXT": np.array([[b""], [b"[other] We got the flat."]],
                                                                           dtype=object)}),
    }
    for name, (load, inputs) in cases.items():
        served, reference = load(repository / name / "1"), load(torch_only / name / "1")
        assert (served.run.backend, reference.run.backend) == ("onnxruntime", "torch"), name
        if inputs is None:
            inputs = dict(zip(FusionGraph.INPUTS, _fusion_inputs(served.model, 7), strict=True))
        _assert_close(reference.infer(inputs), served.infer(inputs))


def test_an_export_of_other_weights_is_not_served(repository, tmp_path):
    folder = tmp_path / "face_encoder"
    shutil.copytree(repository / "face_encoder" / "1", folder)
    model = FaceEmotionEncoder(folder).model
    onnx_export.export_face(model, folder / graph_runner.FILENAME, "face-cnn-retrained")
    assert FaceEmotionEncoder(folder).run.backend == "torch"
