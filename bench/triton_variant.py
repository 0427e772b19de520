"""A second Triton serving edited copies of some models, beside the stack's, for the benchmarks' what-ifs.

    with variant_triton(["text_encoder"], lambda name, pbtxt: pbtxt.replace(...)) as url:
        ...  # call the edited models at url

The copies live in a child of the repository (their configs find the models' virtualenv at
../../.venv) and Triton runs on other ports, through deploy/local/triton.sh like the stack's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTS = {"MERC_TRITON_HTTP_PORT": "18100", "MERC_TRITON_GRPC_PORT": "18101", "MERC_TRITON_METRICS_PORT": "18102"}


@contextmanager
def variant_triton(models: list[str], edit: Callable[[str, str], str]) -> Iterator[str]:
    """Triton serving ``models`` with each config.pbtxt passed through ``edit(model, text)``; yields its gRPC URL."""
    repo = REPO / ".bench-variant"
    run = REPO / ".run" / "bench-variant"
    shutil.rmtree(repo, ignore_errors=True)
    for name in models:
        shutil.copytree(REPO / "model_repository" / name, repo / name)
        pbtxt = repo / name / "config.pbtxt"
        pbtxt.write_text(edit(name, pbtxt.read_text()))
    url = f"127.0.0.1:{PORTS['MERC_TRITON_GRPC_PORT']}"
    env = {**os.environ, **PORTS, "MERC_RUN_DIR": str(run), "MERC_MODEL_REPOSITORY": str(repo), "MERC_TRITON_URL": url}
    script = str(REPO / "deploy/local/triton.sh")
    subprocess.run([script, "start"], env=env, check=True, timeout=600)
    try:
        yield url
    finally:
        subprocess.run([script, "stop"], env=env, check=False, timeout=120)
        shutil.rmtree(repo, ignore_errors=True)
