"""Triton adapter for merc.models.encoders.FaceEmotionEncoder."""

from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from merc.models import batching
from merc.models.encoders import FaceEmotionEncoder


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(int(batching.parameters(args).get("TORCH_THREADS", "1")))
        self.encoder = FaceEmotionEncoder(Path(__file__).parent, device=batching.device(args))
        self.outputs = batching.output_dtypes(pb_utils, args)

    def execute(self, requests):
        return batching.execute(pb_utils, requests, ["FACES"], self.outputs, self.encoder.infer)
