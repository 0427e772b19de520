"""The inference boundary: Triton (KServe v2 gRPC) in deployments, the same model code in-process in embedded mode.

Both take and return dicts of named numpy arrays whose names and shapes are
those of the models' config.pbtxt (batch dimension first).
"""

from __future__ import annotations

import abc

import numpy as np


class InferenceUnavailable(RuntimeError):
    """The inference backend cannot answer now; the caller may retry."""


class InferenceClient(abc.ABC):
    @abc.abstractmethod
    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def ready(self, model: str) -> bool: ...

    @abc.abstractmethod
    def version(self, model: str) -> str:
        """A string naming the weights a model serves (goes into every event)."""

    @abc.abstractmethod
    def input_shapes(self, model: str) -> dict[str, list[int]]:
        """Input shapes without the batch dimension."""

    def close(self) -> None:  # an optional hook, so not abstract
        pass


def make_inference(settings) -> InferenceClient:
    if settings.inference == "local":
        from merc.inference.local import LocalInference

        return LocalInference(settings.model_repository, settings.torch_threads, settings.text_tier)
    from merc.inference.triton import TritonInference

    return TritonInference(settings.triton_url, settings.triton_timeout_s)
