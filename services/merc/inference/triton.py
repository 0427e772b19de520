"""Triton over KServe v2 gRPC (tritonclient). The only module that imports a Triton client."""

from __future__ import annotations

import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from merc.inference import InferenceClient, InferenceUnavailable
from merc.runtime import telemetry

# How long a model's version string is reused: it goes into every event, and reading the config for it
# was a second round trip per request. A model Triton reloads with new weights is named within this.
VERSION_TTL_S = 30.0


class TritonInference(InferenceClient):
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self._client = grpcclient.InferenceServerClient(url=url)
        self._timeout = timeout_s
        self._outputs: dict[str, list[str]] = {}
        self._max_batch: dict[str, int] = {}
        self._versions: dict[str, tuple[float, str]] = {}  # model -> (read at, monotonic; version)

    def _output_names(self, model: str) -> list[str]:
        if model not in self._outputs:
            meta = self._client.get_model_metadata(model, as_json=True)
            self._outputs[model] = [o["name"] for o in meta["outputs"]]
        return self._outputs[model]

    def _config(self, model: str) -> dict:
        try:
            return self._client.get_model_config(model, as_json=True)["config"]
        except InferenceServerException as e:
            raise InferenceUnavailable(f"Triton model {model!r}: {e.message()}") from e

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call per at most max_batch_size rows: Triton refuses a larger batch, and a caller's batch
        (fusion releasing thousands of conversations after a restart) must not depend on the model's config."""
        if model not in self._max_batch:
            self._max_batch[model] = int(self._config(model).get("max_batch_size", 0))
        limit, n = self._max_batch[model], len(next(iter(inputs.values())))
        if not limit or n <= limit:
            return self._infer(model, inputs)
        parts = [self._infer(model, {name: a[i:i + limit] for name, a in inputs.items()}) for i in range(0, n, limit)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            tensors = []
            for name, array in inputs.items():
                t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                t.set_data_from_numpy(array)
                tensors.append(t)
            outputs = [grpcclient.InferRequestedOutput(n) for n in self._output_names(model)]
            # traceparent as gRPC metadata: a Triton started with OpenTelemetry tracing continues the trace.
            result = self._client.infer(model, tensors, outputs=outputs, client_timeout=self._timeout,
                                        headers=telemetry.inject() or None)
        except InferenceServerException as e:
            raise InferenceUnavailable(f"Triton model {model!r}: {e.message()}") from e
        return {n: result.as_numpy(n) for n in self._output_names(model)}

    def version(self, model: str) -> str:
        read_at, version = self._versions.get(model, (float("-inf"), ""))
        if time.monotonic() - read_at > VERSION_TTL_S:
            config = self._config(model)
            version = config.get("parameters", {}).get("model_version", {}).get("string_value", f"{model}:1")
            self._versions[model] = (time.monotonic(), version)
        return version

    def input_shapes(self, model: str) -> dict[str, list[int]]:
        try:
            meta = self._client.get_model_metadata(model, as_json=True)
        except InferenceServerException as e:
            raise InferenceUnavailable(f"Triton model {model!r}: {e.message()}") from e
        # Metadata shapes include the batch dimension (-1) for batching models.
        return {i["name"]: [int(d) for d in i["shape"][1:]] for i in meta["inputs"]}

    def ready(self, model: str) -> bool:
        try:
            return self._client.is_model_ready(model)
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()
