"""Triton python-backend glue shared by every model.py: one model call per dynamic batch.

The adapters pass in `pb_utils` (it only exists inside Triton's stub), so this
module stays importable, and testable, anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def parameters(args: dict) -> dict[str, str]:
    """The string parameters of the model's config.pbtxt."""
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def device(args: dict) -> torch.device:
    """Where the instance's weights and tensors go: the GPU Triton placed it on (KIND_GPU), else the CPU."""
    import torch  # here, not at the top: the rest of this module needs no torch

    if args.get("model_instance_kind") == "GPU":
        return torch.device("cuda", int(args["model_instance_device_id"]))
    return torch.device("cpu")


def execute(pb_utils, requests, inputs: list[str], outputs: dict[str, np.dtype], infer: Callable[[dict], dict],
            optional: list[str] = ()) -> list:
    """Concatenate the requests' inputs, call `infer` once, split the outputs back per request.

    `optional` names [B, 1] string inputs a request may omit: within one dynamic batch some
    requests may carry one and others not, so the missing rows become empty strings.
    """
    arrays = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests] for name in inputs}
    sizes = [len(a) for a in arrays[inputs[0]]]
    for name in optional:
        got = [pb_utils.get_input_tensor_by_name(r, name) for r in requests]
        if any(t is not None for t in got):
            arrays[name] = [t.as_numpy() if t is not None else np.full((n, 1), b"", dtype=object)
                            for t, n in zip(got, sizes, strict=True)]
    result = infer({name: np.concatenate(parts) for name, parts in arrays.items()})
    responses, start = [], 0
    for n in sizes:
        tensors = [pb_utils.Tensor(name, result[name][start : start + n].astype(dtype)) for name, dtype in outputs.items()]
        responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        start += n
    return responses


def output_dtypes(pb_utils, args: dict) -> dict[str, np.dtype]:
    config = json.loads(args["model_config"])
    return {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
