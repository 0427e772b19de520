"""Triton's files derived from each model's hand-written config.pbtxt, so their constants live there once.

- ``configs/gpu.pbtxt``: the same model on a GPU instance. Triton reads it instead of config.pbtxt
  when started with ``--model-config-name=gpu`` (the Helm chart with triton.gpu.enabled, or
  deploy/local with MERC_TRITON_DEVICE=gpu); a model without one keeps config.pbtxt. Only the
  instance kind differs: TORCH_THREADS still bounds a GPU instance's CPU-side work (tokenising,
  calibration), and the warm-up reads the same samples.
- ``configs/mpnet.pbtxt``, ``configs/gpu-mpnet.pbtxt``: the same on the larger text tier
  (merc.models.tiers), for ``--model-config-name=mpnet`` / ``gpu-mpnet`` (the chart's triton.textTier).
  Every model has them, so a GPU deployment of the tier keeps every model on the GPU; the text
  encoder's and the fusion's also name the tier (``TEXT_TIER``, which their adapters read), its
  weights' version, and the embedding's size.
- ``warmup/<file>``: the ``model_warmup`` samples Triton cannot make itself. Its zero_data for a
  string is the empty string (the tokenizer would see no word), and a zero LENGTH makes a
  one-sample audio clip.

    python -m merc.models.triton_configs [--check] [REPOSITORY]     (make model-configs)
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from merc.models import tiers
from merc.pipeline.text_context import causal_context

CONFIGS = Path("configs")
GPU_CONFIG = CONFIGS / "gpu.pbtxt"
WARMUP_DIR = Path("warmup")
HEADER = (
    "# Generated from ../config.pbtxt by `python -m merc.models.triton_configs` (make model-configs): edit that\n"
    "# file, not this one. Triton reads this one instead when started with --model-config-name={name}.\n"
)
_CPU_INSTANCES = re.compile(r"(instance_group \[[^\]]*\bkind: )KIND_CPU\b")


def gpu_config(config: str) -> str:
    """config.pbtxt's text with its instances on the GPU."""
    gpu, n = _CPU_INSTANCES.subn(r"\g<1>KIND_GPU", config)
    if n != 1:
        raise ValueError(f"expected one KIND_CPU instance_group, found {n}")
    return gpu


def _set_dims(config: str, name: str, dims: int) -> str:
    """Every declaration of tensor ``name`` (input, output, warm-up) given ``[dims]``."""
    out, n = re.subn(rf'((?:name|key): "{name}",[^\n]*?dims: \[ )\d+( \])', rf"\g<1>{dims}\g<2>", config)
    if n == 0:
        raise ValueError(f"no {name} with dims in the config")
    return out


def tier_config(model_dir: Path, config: str, tier: str) -> str:
    """config.pbtxt's text for ``tier``: a tier-aware model's weights, version and text size; others as they are."""
    if model_dir.name not in tiers.MODELS:
        return config
    meta = json.loads((tiers.folder(model_dir / "1", tier) / "config.json").read_text())
    if model_dir.name == "text_encoder":
        from merc.models.text_encoder import adapter_base

        config = _set_dims(config, "EMBEDDING", adapter_base(meta, model_dir).dim)
    else:
        config = _set_dims(config, "TEXT", meta["text_dim"])
    config, n = re.subn(r'(key: "model_version", value: \{ string_value: ")[^"]*(")', rf'\g<1>{meta["version"]}\g<2>', config)
    if n != 1:
        raise ValueError("expected one model_version parameter")
    return config + f'parameters: {{ key: "{tiers.PARAMETER}", value: {{ string_value: "{tier}" }} }}\n'


def variants(model_dir: Path, config: str) -> dict[str, str]:
    """Each --model-config-name the model answers to -> that config's text."""
    out = {"gpu": gpu_config(config)}
    for tier in tiers.TIERS:
        if tier != tiers.DEFAULT:
            out[tiers.config_name(False, tier)] = tier_config(model_dir, config, tier)
            out[tiers.config_name(True, tier)] = gpu_config(out[tiers.config_name(False, tier)])
    return out


def strings(*values: str) -> bytes:
    """TYPE_STRING elements as an input_data_file holds them: each a little-endian uint32 length, then its bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in values))


def warmup_dims(config: str, name: str) -> list[int]:
    """The dims the config's warm-up gives input ``name``."""
    m = re.search(rf'inputs \{{ key: "{name}", value: \{{ [^}}]*\bdims: \[ ([\d, ]+) \]', config)
    if m is None:
        raise ValueError(f"no model_warmup input {name!r} with dims in the config")
    return [int(d) for d in m.group(1).split(",")]


# A line of a conversation and the turns before it, as callers format them (merc.pipeline.text_context).
_UTTERANCE = "Wait, you actually got the job? That's amazing!"
_HISTORY = [(True, "So, how did the interview go?"), (False, "I don't know, I think I blew it."),
            (False, "They just called.")]


def _whole_clip(config: str) -> bytes:
    """A warm-up LENGTH saying the whole clip is real: the length the warm-up's WAVE holds."""
    return struct.pack("<q", warmup_dims(config, "WAVE")[-1])


# model -> warmup/ file -> its bytes, from the model's config.pbtxt.
WARMUP_FILES: dict[str, dict[str, Callable[[str], bytes]]] = {
    "text_encoder": {
        "text": lambda config: strings(_UTTERANCE),
        "context": lambda config: strings(causal_context(_HISTORY)),
    },
    "audio_encoder": {"length": _whole_clip},
    "transcriber": {"length": _whole_clip},
}


def generated(model_dir: Path) -> dict[Path, bytes]:
    """Every file derived from ``model_dir``'s config.pbtxt, by path relative to ``model_dir``."""
    config = (model_dir / "config.pbtxt").read_text()
    files = {CONFIGS / f"{name}.pbtxt": (HEADER.format(name=name) + text).encode()
             for name, text in variants(model_dir, config).items()}
    for name, make in WARMUP_FILES.get(model_dir.name, {}).items():
        files[WARMUP_DIR / name] = make(config)
    return files


def models(repository: Path) -> list[Path]:
    return sorted(p.parent for p in repository.glob("*/config.pbtxt"))


def write_model(model_dir: Path) -> list[Path]:
    """(Re)write ``model_dir``'s derived files; the ones that changed."""
    changed = []
    for rel, content in generated(model_dir).items():
        path = model_dir / rel
        if not path.is_file() or path.read_bytes() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            changed.append(path)
    return changed


def stale(repository: Path) -> list[Path]:
    """Derived files that are missing or differ from what their config.pbtxt generates."""
    return [model_dir / rel for model_dir in models(repository) for rel, content in generated(model_dir).items()
            if not (model_dir / rel).is_file() or (model_dir / rel).read_bytes() != content]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m merc.models.triton_configs", description=__doc__.split("\n\n")[0])
    p.add_argument("repository", nargs="?", type=Path, default=Path("model_repository"))
    p.add_argument("--check", action="store_true", help="write nothing; fail when a derived file is stale")
    args = p.parse_args(argv)
    if not models(args.repository):
        p.error(f"no */config.pbtxt under {args.repository}")
    if args.check:
        bad = stale(args.repository)
        for path in bad:
            print(f"stale: {path}; run 'make model-configs'", file=sys.stderr)
        return 1 if bad else 0
    for model_dir in models(args.repository):
        for path in write_model(model_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
