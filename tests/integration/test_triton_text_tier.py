"""A Triton started on the larger text tier (MERC_TEXT_TIER=mpnet: configs/mpnet.pbtxt) serves that tier's
text encoder and fusion, the same numbers as the in-process tier, and the other models unchanged."""

import os
import socket
import subprocess

import numpy as np
import pytest
from conftest import REPO

from merc.inference.local import LocalInference
from merc.inference.triton import TritonInference

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tier_triton(triton, tmp_path_factory):
    # The stack's Triton (the `triton` fixture) proves the local Triton installed; this one runs beside it.
    ports = {name: str(_free_port()) for name in ("HTTP", "GRPC", "METRICS")}
    env = {**os.environ, "MERC_TEXT_TIER": "mpnet", "MERC_RUN_DIR": str(tmp_path_factory.mktemp("tier-run")),
           **{f"MERC_TRITON_{name}_PORT": port for name, port in ports.items()}}
    env.pop("MERC_TRITON_URL", None)
    script = str(REPO / "deploy" / "local" / "triton.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=600)
    try:
        yield TritonInference(f"127.0.0.1:{ports['GRPC']}")
    finally:
        subprocess.run([script, "stop"], env=env, check=False, timeout=120)


def test_the_tier_s_models_serve_what_the_in_process_tier_does(tier_triton):
    local = LocalInference(None, 1, "mpnet")
    batch = {"TEXT": np.array([[b"Really?"], [b"Really?"]], dtype=object),
             "CONTEXT": np.array([[b"(other) I just won the lottery!"], [b"(other) My dog died."]], dtype=object)}
    a, b = tier_triton.infer("text_encoder", batch)["EMBEDDING"], local.infer("text_encoder", batch)["EMBEDDING"]
    assert a.shape == (2, 768)
    np.testing.assert_allclose(a, b, atol=1e-4)
    for model in ("text_encoder", "fusion"):
        assert tier_triton.version(model) == local.version(model)
    assert tier_triton.input_shapes("fusion")["TEXT"] == [768]
    # Every other model is the default's.
    assert tier_triton.version("face_encoder") == LocalInference().version("face_encoder")
