"""Export the served models' tensor maths (merc.models.graphs) to ONNX, one function per model.

torch.onnx's dynamo exporter (torch.export + onnxscript; the TorchScript one is deprecated since
torch 2.9). Each file records the model version it was exported from (metadata ``merc_version``),
so merc.models.graph_runner never serves an export of other weights than the ones it loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from merc.models import tiers
from merc.models.audio_cnn import AudioCNN
from merc.models.context_model import ContextModel
from merc.models.face_cnn import FaceCNN
from merc.models.graph_runner import FILENAME, VERSION_KEY
from merc.models.graphs import AudioGraph, FaceGraph, FusionGraph, TextGraph
from merc.models.text_encoder import tokenize

# The exporter warns once per torchvision op it cannot register (torchvision is not installed, and
# no MERC model uses one): a dozen lines in every `make install` that say nothing.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

# Opset 18: what the dynamo exporter targets natively (no version conversion pass).
OPSET = 18


def export_graph(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path, version: str) -> Path:
    """Write ``graph`` (a merc.models.graphs module) to ``path`` with its dynamic axes."""
    graph = graph.eval()
    dims = tuple({axis: torch.export.Dim.DYNAMIC for axis in graph.DYNAMIC.get(name, ())} for name in graph.INPUTS)
    with torch.no_grad():
        program = torch.onnx.export(graph, example, dynamo=True, input_names=list(graph.INPUTS),
                                    output_names=list(graph.OUTPUTS), dynamic_shapes=dims, opset_version=OPSET,
                                    verbose=False)
    program.model.metadata_props[VERSION_KEY] = version
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Renamed into place: a model loading meanwhile sees the old file or the new one, never half of one.
    partial = path.with_name(path.name + ".partial")
    # One self-contained file (the text transformer's ~90 MB is far below protobuf's 2 GB limit).
    program.save(str(partial), external_data=False)
    partial.replace(path)
    return path


def export_face(cnn: FaceCNN, path: Path, version: str) -> Path:
    size = cnn.cfg.size
    return export_graph(FaceGraph(cnn), (torch.randint(0, 256, (2, size, size), dtype=torch.uint8),), path, version)


def export_audio(cnn: AudioCNN, path: Path, version: str) -> Path:
    # Any example length above the pooling stages' minimum (2**stages frames) traces the same graph.
    return export_graph(AudioGraph(cnn), (torch.randn(2, cnn.cfg.n_mels, 300),), path, version)


def fusion_example(model: ContextModel, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs in FusionGraph.INPUTS order: random features, every modality pattern cycling, a half-full context."""
    c = model.cfg
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.float32).repeat(batch, 1)[:batch]
    return (torch.randn(batch, c.text_dim), torch.randn(batch, c.audio_dim), torch.randn(batch, c.vision_dim), mask,
            torch.rand(batch, c.quality_dim), torch.randint(0, 4, (batch, 1)), torch.randn(batch, c.context, c.hidden),
            torch.randint(0, 4, (batch, c.context)), (torch.arange(c.context) >= c.context // 2).float().repeat(batch, 1))


def export_fusion(model: ContextModel, path: Path, version: str) -> Path:
    return export_graph(FusionGraph(model), fusion_example(model), path, version)


def export_text(bert: nn.Module, tokenizer, path: Path, version: str, token_types: bool = True) -> Path:
    """``bert``: the transformer with its adapter merged (merc.models.text_encoder.TextEncoder.model);
    ``token_types``: whether it reads segment ids (its base's)."""
    # Two rows of different lengths, so the export sees padding and a pair (segment B) input.
    batch = tokenize(tokenizer, ["an utterance", "a somewhat longer utterance than the first one"],
                     ["", "the context before it | said by another speaker"], 64)
    example = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return export_graph(TextGraph(bert, token_types), example, path, version)


# What each served model (merc.inference.local.FACTORIES) exports from what it loaded.
EXPORTS = {
    "face_encoder": lambda m, path: export_face(m.model, path, m.version),
    "audio_encoder": lambda m, path: export_audio(m.model, path, m.version),
    "fusion": lambda m, path: export_fusion(m.model, path, m.version),
    "text_encoder": lambda m, path: export_text(m.model, m.tokenizer, path, m.version, m.base.token_types),
}


def export_repository(repository: Path) -> list[Path]:
    """`merc onnx`: each model's export into its version folder, from the weights there.

    Generated, not committed: the exports repeat the weights (the text transformer's alone is ~90
    MB), so the Triton image and `make install` write them, and a stale one is ignored at load.
    """
    from merc.inference.local import FACTORIES

    out = []
    for name, export in EXPORTS.items():
        for tier in tiers.TIERS if name in tiers.MODELS else (tiers.DEFAULT,):
            folder = tiers.folder(Path(repository) / name / "1", tier)
            if tier == tiers.DEFAULT or folder.is_dir():
                out.append(export(FACTORIES[name](str(repository), tier), folder / FILENAME))
    return out
