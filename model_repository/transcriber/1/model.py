"""Triton adapter for merc.models.transcriber.Transcriber."""

import triton_python_backend_utils as pb_utils

from merc.models import batching
from merc.models.transcriber import Transcriber


class TritonPythonModel:
    def initialize(self, args):
        device = batching.device(args)
        threads = int(batching.parameters(args).get("CPU_THREADS", "2"))
        self.model = Transcriber(device=device.type, index=device.index or 0, threads=threads)
        self.outputs = batching.output_dtypes(pb_utils, args)

    def execute(self, requests):
        return batching.execute(pb_utils, requests, ["WAVE", "LENGTH"], self.outputs, self.model.infer, optional=["LANGUAGE"])
