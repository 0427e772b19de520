"""The committed model repository is what the code expects: checksums, versions, shapes."""

import hashlib
import json
import re

import pytest
from conftest import REPO

MODELS = REPO / "model_repository"
TRAINED = sorted(p.parent.parent for p in MODELS.glob("*/1/SHA256SUMS"))


@pytest.mark.parametrize("model", TRAINED, ids=lambda p: p.name)
def test_committed_files_match_their_sha256(model):
    for line in (model / "1" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((model / "1" / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("model", TRAINED, ids=lambda p: p.name)
def test_triton_config_names_the_committed_version(model):
    config = json.loads((model / "1" / "config.json").read_text())
    pbtxt = (model / "config.pbtxt").read_text()
    assert re.search(r'key: "model_version", value: \{ string_value: "([^"]+)"', pbtxt).group(1) == config["version"]


def test_every_model_directory_is_servable():
    # Triton refuses to start when one directory of the repository is not a model.
    for d in MODELS.iterdir():
        if d.is_dir():
            assert (d / "config.pbtxt").is_file() and (d / "1" / "model.py").is_file(), d.name


def test_fusion_shapes_match_its_config():
    config = json.loads((MODELS / "fusion" / "1" / "config.json").read_text())
    pbtxt = (MODELS / "fusion" / "config.pbtxt").read_text()
    k, h = config["context"], config["hidden"]
    assert f'name: "CTX_FUSED", data_type: TYPE_FP32, dims: [ {k}, {h} ]' in pbtxt
    assert f'name: "FUSED", data_type: TYPE_FP32, dims: [ {h} ]' in pbtxt


def test_weights_stay_small():
    # `merc onnx`'s exports are generated next to the weights, never committed (.gitignore).
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file() and p.name != "model.onnx")
    assert total < 20 * 2**20


def test_fusion_was_trained_on_the_shipped_encoders():
    # The fusion reads the encoders' embeddings (and copies of the voice/face heads): retraining an
    # encoder without retraining the fusion would silently change what its inputs mean.
    trained_on = json.loads((MODELS / "fusion" / "1" / "config.json").read_text())["encoders"]
    for name, version in trained_on.items():
        assert json.loads((MODELS / name / "1" / "config.json").read_text())["version"] == version, name


def test_fusion_calibration_covers_every_modality_pattern():
    calibration = json.loads((MODELS / "fusion" / "1" / "calibration.json").read_text())
    patterns = {"text", "audio", "vision", "text+audio", "text+vision", "audio+vision", "text+audio+vision"}
    assert set(calibration["patterns"]) == patterns
    assert all(p["temperature"] > 0 and 0 < p["threshold"] <= 1 for p in calibration["patterns"].values())
