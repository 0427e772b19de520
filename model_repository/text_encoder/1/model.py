"""Triton adapter for merc.models.text_encoder.TextEncoder."""

from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from merc.models import batching, tiers
from merc.models.text_encoder import TextEncoder


class TritonPythonModel:
    def initialize(self, args):
        # One instance per core is the unit of scaling; intra-op threads would fight over them.
        torch.set_num_threads(int(batching.parameters(args).get("TORCH_THREADS", "1")))
        # The adapter lives next to this file (the version directory Triton loaded), or in the subfolder of the
        # tier the config names (merc.models.tiers).
        tier = batching.parameters(args).get(tiers.PARAMETER, tiers.DEFAULT)
        self.encoder = TextEncoder.from_repository(tiers.folder(Path(__file__).parent, tier), device=batching.device(args))
        self.outputs = batching.output_dtypes(pb_utils, args)

    def execute(self, requests):
        return batching.execute(pb_utils, requests, ["TEXT"], self.outputs, self.encoder.infer, optional=["CONTEXT"])
