"""What every trainer writes: weights + config + SHA256SUMS in a version directory, and a seed table."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from merc.models import triton_configs
from merc.pipeline.labels import LABELS


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(out: Path, model: nn.Module, config: dict, prefix: str) -> str:
    """Write weights.safetensors, config.json (with the version) and SHA256SUMS; return the version."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
    version = f"{prefix}-{sha256(out / 'weights.safetensors')[:12]}"
    (out / "config.json").write_text(json.dumps({**config, "version": version, "labels": list(LABELS)}, indent=2) + "\n")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in ("weights.safetensors", "config.json")))
    stamp(out, version)
    return version


def stamp(out: Path, version: str) -> None:
    """Name new weights in Triton's configs. ``out``: a version folder (``model/1``), or a text tier's
    (``model/1/<tier>``, merc.models.tiers), whose generated configs read the version from its config.json."""
    if (out.parent / "config.pbtxt").is_file():
        stamp_triton_version(out.parent / "config.pbtxt", version)
    elif (out.parent.parent / "config.pbtxt").is_file():
        triton_configs.write_model(out.parent.parent)


def stamp_triton_version(pbtxt: Path, version: str) -> None:
    """Triton reports a model's version from its config, so events name the weights they came from.

    The configs generated from it (configs/gpu.pbtxt) are rewritten too, so either one names the new weights.
    """
    if pbtxt.is_file():
        text = re.sub(r'(key: "model_version", value: \{ string_value: ")[^"]*(")', rf"\g<1>{version}\g<2>", pbtxt.read_text())
        pbtxt.write_text(text)
        triton_configs.write_model(pbtxt.parent)


def pm(values) -> str:
    """"mean ± sample std" of per-seed figures."""
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def mean_std(rows: list[dict], key: str) -> str:
    return pm([r[key] for r in rows])


def save_markdown(path: Path, lines: list[str]) -> str:
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def metrics_table(rows: list[dict], split: str) -> list[str]:
    """Markdown: headline mean ± std over seeds, then per-seed weighted F1 and per-class recall."""
    lines = [
        f"| metric ({split}, {len(rows)} seeds) | mean ± std |",
        "|---|---|",
        f"| weighted F1 | {mean_std(rows, 'weighted_f1')} |",
        f"| macro F1 | {mean_std(rows, 'macro_f1')} |",
        f"| accuracy | {mean_std(rows, 'accuracy')} |",
        "",
        "| seed | weighted F1 | " + " | ".join(f"recall {n}" for n in LABELS) + " |",
        "|---|---|" + "---|" * len(LABELS),
    ]
    for seed, r in enumerate(rows):
        lines.append(f"| {seed} | {r['weighted_f1']:.4f} | " + " | ".join(f"{x:.3f}" for x in r["recall"]) + " |")
    return lines


def command_line(command: str, argv: list[str] | None) -> str:
    """How a trainer was run, for its report: ``merc train X`` hands main() its arguments; without them
    it ran as ``python -m merc.training.X`` and they are the interpreter's."""
    return f"{command} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def write_report(
    path: Path, title: str, command: str, argv: list[str] | None, started: float, threads: int,
    shipped: str, version: str, data: str, rows: list[dict], split: str, device: str = "cpu",
) -> None:
    """The Markdown report every trainer leaves in bench/results, printed as well."""
    lines = [
        f"# {title}",
        "",
        f"Command: `{command_line(command, argv)}`  ",
        f"Wall time: {time.time() - started:.0f} s on {where(device, threads)}, torch {torch.__version__}  ",
        f"Shipped: `{shipped}` version `{version}` (seed 0; seeds are not chosen on {split})",
        "",
        data,
        "",
        *metrics_table(rows, split),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def where(device: str, threads: int) -> str:
    """The hardware a figure's wall time was measured on, for reports."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (GPU)"
    return f"{platform.machine()} CPU ({threads} threads)"


def relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
