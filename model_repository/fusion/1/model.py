"""Triton adapter for merc.models.predictor.FusionPredictor: parse tensors, call the model, split."""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from merc.models.predictor import INPUTS, OUTPUTS, FusionPredictor


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        torch.set_num_threads(int(params.get("TORCH_THREADS", "1")))
        # The weights live next to this file: the version directory Triton loaded.
        self.predictor = FusionPredictor(Path(__file__).parent)
        self.dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}

    def execute(self, requests):
        # One model call for the whole dynamic batch, split back per request.
        inputs = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests] for name in INPUTS}
        sizes = [len(a) for a in inputs[INPUTS[0]]]
        outputs = self.predictor.infer({name: np.concatenate(parts) for name, parts in inputs.items()})
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, outputs[name][start : start + n].astype(self.dtypes[name])) for name in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
