"""Triton adapter for merc.models.text_encoder.TextEncoder: parse tensors, call the model, split."""

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from merc.models.text_encoder import TextEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # One instance per core is the unit of scaling; intra-op threads would fight over them.
        torch.set_num_threads(int(params.get("TORCH_THREADS", "1")))
        self.encoder = TextEncoder()

    def execute(self, requests):
        # One model call for the whole dynamic batch, split back per request.
        texts = [pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy() for r in requests]
        sizes = [len(t) for t in texts]
        embedding = self.encoder.infer({"TEXT": np.concatenate(texts)})["EMBEDDING"]
        responses, start = [], 0
        for n in sizes:
            out = pb_utils.Tensor("EMBEDDING", embedding[start : start + n].astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
