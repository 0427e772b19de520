"""The committed model repository is what the code expects: checksums, versions, shapes."""

import hashlib
import json
import re
import struct

import numpy as np
import pytest
from conftest import REPO
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype

from merc.models import text_encoder, tiers

MODELS = REPO / "model_repository"
TRAINED = sorted(p.parent.parent for p in MODELS.glob("*/1/SHA256SUMS"))
# Every folder of weights: the version folders and the text tiers' (merc.models.tiers).
WEIGHTS = sorted(p.parent for p in [*MODELS.glob("*/1/SHA256SUMS"), *MODELS.glob("*/1/*/SHA256SUMS")])


@pytest.mark.parametrize("folder", WEIGHTS, ids=lambda p: str(p.relative_to(MODELS)))
def test_committed_files_match_their_sha256(folder):
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


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
    # A guard against committing what does not belong (exports, optimizer states, checkpoints): `merc onnx`'s
    # exports are generated next to the weights, never committed (.gitignore). The budget was 20 MiB until the
    # face CNN grew to 64-512 widths (19 MB of float32 weights, bench/results/vision_fer2013.md).
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file() and p.name != "model.onnx")
    assert total < 40 * 2**20


@pytest.mark.parametrize("tier", tiers.TIERS)
def test_fusion_was_trained_on_the_shipped_encoders(tier):
    # The fusion reads the encoders' embeddings (and copies of the voice/face heads): retraining an
    # encoder without retraining the fusion would silently change what its inputs mean. A text tier's
    # fusion reads that tier's text encoder.
    fusion = json.loads((tiers.folder(MODELS / "fusion" / "1", tier) / "config.json").read_text())
    for name, version in fusion["encoders"].items():
        folder = tiers.folder(MODELS / name / "1", tier) if name in tiers.MODELS else MODELS / name / "1"
        assert json.loads((folder / "config.json").read_text())["version"] == version, name
    assert fusion["text_dim"] == text_encoder.base_of(fusion["encoders"]["text_encoder"]).dim


def test_fusion_calibration_covers_every_modality_pattern():
    calibration = json.loads((MODELS / "fusion" / "1" / "calibration.json").read_text())
    patterns = {"text", "audio", "vision", "text+audio", "text+vision", "audio+vision", "text+audio+vision"}
    assert set(calibration["patterns"]) == patterns
    assert all(p["temperature"] > 0 and 0 < p["threshold"] <= 1 for p in calibration["patterns"].values())


def triton_config(path):
    """A config.pbtxt as Triton reads it: a ModelConfig message (an unknown or misplaced field fails here too)."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


CONFIGS = sorted([*MODELS.glob("*/config.pbtxt"), *MODELS.glob("*/configs/*.pbtxt")])


def _string_elements(data: bytes) -> list[bytes]:
    out = []
    while data:
        (n,) = struct.unpack("<I", data[:4])
        out.append(data[4 : 4 + n])
        assert len(out[-1]) == n, "truncated string element"
        data = data[4 + n :]
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(MODELS)))
def test_warmup_inputs_match_the_declared_inputs(path):
    # Triton refuses to load a model whose warm-up sample does not fit its inputs, and skips a batch of 0.
    config = triton_config(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    declared = {i.name: i for i in config.input}
    assert config.model_warmup, "no model_warmup: the first real call would be a cold one"
    for sample in config.model_warmup:
        assert 1 <= sample.batch_size <= config.max_batch_size, sample.name
        assert set(sample.inputs) <= set(declared), sample.name
        assert {n for n, i in declared.items() if not i.optional} <= set(sample.inputs), sample.name
        for name, given in sample.inputs.items():
            want = declared[name]
            assert given.data_type == want.data_type, name
            assert len(given.dims) == len(want.dims), name
            assert all(g == w if w != -1 else g > 0 for g, w in zip(given.dims, want.dims, strict=True)), name
            kind = given.WhichOneof("input_data_type")
            assert kind in ("zero_data", "input_data_file"), f"{name}: random data could be a NaN or a bad index"
            if kind == "input_data_file":
                data = (model_dir / "warmup" / given.input_data_file).read_bytes()
                count = int(np.prod(given.dims))
                if want.data_type == model_config_pb2.TYPE_STRING:
                    elements = _string_elements(data)
                    assert len(elements) == count and all(e.decode().strip() for e in elements), name
                else:
                    dtype = triton_to_np_dtype(model_config_pb2.DataType.Name(want.data_type).removeprefix("TYPE_"))
                    assert len(data) == count * np.dtype(dtype).itemsize, name
