"""The Triton glue: one model call per dynamic batch, outputs split back per request."""

import json
import types

import numpy as np

from merc.models import batching


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


pb_utils = types.SimpleNamespace(
    Tensor=_Tensor,
    InferenceResponse=lambda output_tensors: {t.name: t.array for t in output_tensors},
    get_input_tensor_by_name=lambda request, name: _Tensor(name, request[name]),
    triton_string_to_numpy=lambda s: {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}[s],
)


def test_one_call_per_batch_and_split_back():
    calls = []

    def infer(inputs):
        calls.append(len(inputs["X"]))
        return {"Y": inputs["X"] * 2, "N": np.arange(len(inputs["X"]))[:, None]}

    requests = [{"X": np.ones((2, 3))}, {"X": np.full((1, 3), 5.0)}, {"X": np.zeros((3, 3))}]
    args = {"model_config": json.dumps({"output": [{"name": "Y", "data_type": "TYPE_FP32"}, {"name": "N", "data_type": "TYPE_INT64"}]})}
    out = batching.execute(pb_utils, requests, ["X"], batching.output_dtypes(pb_utils, args), infer)
    assert calls == [6]
    assert [r["Y"].shape for r in out] == [(2, 3), (1, 3), (3, 3)]
    assert out[1]["Y"].dtype == np.float32 and out[1]["Y"][0, 0] == 10
    assert [r["N"].ravel().tolist() for r in out] == [[0, 1], [2], [3, 4, 5]]


def test_parameters_reads_string_values():
    args = {"model_config": json.dumps({"parameters": {"TORCH_THREADS": {"string_value": "2"}}})}
    assert batching.parameters(args) == {"TORCH_THREADS": "2"}


def test_device_follows_the_instance_triton_made():
    # The python backend passes every arg as a string.
    assert str(batching.device({"model_instance_kind": "GPU", "model_instance_device_id": "1"})) == "cuda:1"
    assert str(batching.device({"model_instance_kind": "CPU", "model_instance_device_id": "0"})) == "cpu"
    # KIND_MODEL (or an older backend that sends no kind) leaves placement to the model: the CPU here.
    assert str(batching.device({"model_instance_kind": "MODEL", "model_instance_device_id": "0"})) == "cpu"
    assert str(batching.device({})) == "cpu"
