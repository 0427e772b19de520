"""The committed model repository is what the code expects: checksums, versions, shapes."""

import hashlib
import json
import re

from conftest import REPO

FUSION = REPO / "model_repository" / "fusion"


def test_committed_files_match_their_sha256():
    for line in (FUSION / "1" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((FUSION / "1" / name).read_bytes()).hexdigest() == digest, name


def test_triton_config_names_the_committed_version_and_shapes():
    config = json.loads((FUSION / "1" / "config.json").read_text())
    pbtxt = (FUSION / "config.pbtxt").read_text()
    assert re.search(r'key: "model_version", value: \{ string_value: "([^"]+)"', pbtxt).group(1) == config["version"]
    k, h = config["context"], config["hidden"]
    assert f'name: "CTX_FUSED", data_type: TYPE_FP32, dims: [ {k}, {h} ]' in pbtxt
    assert f'name: "FUSED", data_type: TYPE_FP32, dims: [ {h} ]' in pbtxt


def test_weights_stay_small():
    total = sum(p.stat().st_size for p in (REPO / "model_repository").rglob("*") if p.is_file())
    assert total < 20 * 2**20
