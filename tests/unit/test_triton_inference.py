"""merc.inference.triton without a server: what it asks Triton, and how often."""

from merc.inference import triton
from merc.inference.triton import TritonInference


def test_the_version_is_read_once_per_ttl(monkeypatch):
    client = TritonInference("127.0.0.1:1")  # no connection is made until a call
    reads = []

    def config(model):
        reads.append(model)
        return {"parameters": {"model_version": {"string_value": f"{model}-v{len(reads)}"}}}

    now = [1000.0]
    monkeypatch.setattr(client, "_config", config)
    monkeypatch.setattr(triton.time, "monotonic", lambda: now[0])
    assert [client.version("text_encoder") for _ in range(5)] == ["text_encoder-v1"] * 5
    assert reads == ["text_encoder"]  # one round trip, not one per event
    now[0] += triton.VERSION_TTL_S + 1
    assert client.version("text_encoder") == "text_encoder-v2"  # new weights are named within the TTL
    assert client.version("fusion") == "fusion-v3" and reads == ["text_encoder", "text_encoder", "fusion"]
    client.close()
