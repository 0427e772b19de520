"""What the gateway refuses before it holds anything: oversized utterances, and streams beyond a tenant's share.

The encoders check the same limits (merc.pipeline.modalities); the gateway checks them first so that
an oversized text is never buffered, remembered as context or fanned out three times.
"""

from __future__ import annotations

import threading

import numpy as np

from merc.media import PCM
from merc.pipeline.text_context import collapse_spaces
from merc.v1 import gateway_pb2

# Bytes per sample and channel of each raw encoding the encoders decode.
_SAMPLE_BYTES = {name: np.dtype(dtype).itemsize for name, (dtype, _) in PCM.items()}


def oversized(request: gateway_pb2.AnalyzeUtteranceRequest, settings) -> dict[str, str]:
    """The modalities of the request over a size limit their encoder would refuse them for, with why.

    Only what is cheap without decoding: the text's length (as the text encoder counts it), raw PCM's
    duration from its byte count, the number of images. Compressed audio is bounded by the encoder.
    """
    found = {}
    text = request.text
    if len(text) > settings.max_text_chars:
        n = len(collapse_spaces(text))  # runs of spaces count as one, as in the text encoder
        if n > settings.max_text_chars:
            found["text"] = f"text has {n} characters; the limit is {settings.max_text_chars} (MERC_MAX_TEXT_CHARS)"
    n = len(request.frames) + len(request.faces)
    if n > settings.max_frames:
        found["vision"] = f"{n} images; the limit is {settings.max_frames} per utterance (MERC_MAX_FRAMES)"
    audio = request.audio
    if request.HasField("audio") and audio.encoding in _SAMPLE_BYTES and audio.sample_rate > 0 and audio.channels > 0:
        width = _SAMPLE_BYTES[audio.encoding] * audio.channels
        frames = len(audio.data) // width
        if frames > settings.max_audio_seconds * audio.sample_rate:  # the encoder's own test
            found["audio"] = (f"audio is {frames / audio.sample_rate:.1f} s long; the limit is {settings.max_audio_seconds:g} s "
                              "(MERC_MAX_AUDIO_SECONDS)")
    return found


def streams_per_tenant(settings) -> int:
    """MERC_MAX_STREAMS_PER_TENANT, or by default: all of MERC_MAX_STREAMS with one tenant (no API keys),
    a quarter of them (at least one) when keys may name several."""
    if settings.max_streams_per_tenant:
        return min(settings.max_streams_per_tenant, settings.max_streams)
    if not (settings.api_keys or settings.api_keys_file):
        return settings.max_streams
    return max(1, settings.max_streams // 4)


class StreamSlots:
    """At most ``total`` streams open at once, and at most ``per_tenant`` of them for any one tenant."""

    def __init__(self, total: int, per_tenant: int | None = None) -> None:
        self.total = total
        self.per_tenant = min(per_tenant or total, total)
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> str | None:
        """Take a slot for the tenant: None when taken, else why not (the caller answers RESOURCE_EXHAUSTED/503)."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                return f"too many open streams on this gateway ({self.total}); retry later"
            if self._open.get(tenant, 0) >= self.per_tenant:
                return f"this tenant has {self.per_tenant} streams open, its limit on this gateway; close one or retry later"
            self._open[tenant] = self._open.get(tenant, 0) + 1
            return None

    def release(self, tenant: str) -> None:
        with self._lock:
            left = self._open.get(tenant, 0) - 1
            if left > 0:
                self._open[tenant] = left
            else:
                self._open.pop(tenant, None)

    def open(self, tenant: str | None = None) -> int:
        """Streams open now: the tenant's, or all."""
        with self._lock:
            return sum(self._open.values()) if tenant is None else self._open.get(tenant, 0)
