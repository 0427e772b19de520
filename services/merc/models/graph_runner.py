"""Run a served graph (merc.models.graphs): ONNX Runtime when its export sits in the version folder, else torch.

Triton's adapters and embedded mode both construct the model classes, which call ``load``, so the
two modes pick the same runtime from the same files. ONNX Runtime gets as many intra-op threads
as torch was given (the adapters' TORCH_THREADS, embedded mode's --threads): one knob for both.
bench/results/onnx.md has the measurements that decided which models are exported.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

# Where `merc onnx` (merc.models.onnx_export) writes a version folder's export, and the metadata key
# naming the model version it was exported from.
FILENAME = "model.onnx"
VERSION_KEY = "merc_version"


def session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Triton runs one instance per core and batches across requests; a second pool would only contend.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class TorchRunner:
    backend = "torch"

    def __init__(self, graph: nn.Module) -> None:
        self.graph = graph.eval()
        self.device = _device(graph)

    @torch.inference_mode()
    def __call__(self, *arrays: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        # A tensor already on the device (the audio encoder's log-mel on a GPU) stays there.
        outs = self.graph(*((a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))).to(self.device)
                            for a in arrays))
        return {name: t.float().cpu().numpy() for name, t in zip(self.graph.OUTPUTS, outs, strict=True)}


class OnnxRunner:
    backend = "onnxruntime"

    def __init__(self, path: Path, inputs: tuple[str, ...], threads: int) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.inputs = inputs
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def exported_from(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(VERSION_KEY)

    def __call__(self, *arrays: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(a) for name, a in zip(self.inputs, arrays, strict=True)}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))


def _device(graph: nn.Module) -> torch.device:
    return next(graph.parameters()).device


def load(graph: nn.Module, directory: Path | None, version: str) -> TorchRunner | OnnxRunner:
    """``graph`` built from the weights of ``version`` and placed where it should run; ``directory`` is
    where its export would be (None: there is none)."""
    path = Path(directory) / FILENAME if directory is not None else None
    # The export is CPU-only (bench/results/onnx.md measured CPU); a model placed on a GPU stays in torch.
    if path is not None and path.is_file() and _device(graph).type == "cpu":
        runner = OnnxRunner(path, graph.INPUTS, torch.get_num_threads())
        if runner.exported_from == version:
            log.info("%s runs on %s (%s)", version, runner.backend, path)
            return runner
        # Retrained weights with an old export next to them: serving it would answer for other weights.
        log.warning("%s was exported from %s, not %s: ignoring it (run `merc onnx` again)", path,
                    runner.exported_from, version)
    return TorchRunner(graph)
