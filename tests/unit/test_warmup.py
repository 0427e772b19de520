"""Each encoder plug-in's warm-up input runs its whole path (the service turns SERVING only after it)."""

import pytest

from merc.inference.local import LocalInference
from merc.pipeline.modalities import PLUGINS
from merc.runtime.config import Settings


@pytest.fixture(scope="module")
def inference():
    return LocalInference(None, 1)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_warmup_request_encodes(inference, name):
    plugin = PLUGINS[name](inference, Settings(inference="local"))
    request = plugin.warmup_request()
    assert plugin.has_input(request)
    encoded = plugin.encode(request)
    assert encoded.vector.ndim == 1 and encoded.vector.size > 0
