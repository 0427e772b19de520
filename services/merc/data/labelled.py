"""A user's own paired multimodal data: a conversation manifest whose lines carry ``label``.

Each line is encoded by the same plug-ins, models and request builder (merc.analyze.requests) as
`merc analyze`, its text read with the same context, so training sees exactly what serving will.
Conversations keep their order, and speakers are numbered by first appearance. Lines without a known label, or where no modality could be encoded, are skipped
with a reason; a corpus that is mostly skipped is an error, not a quiet success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from merc.analyze import manifest
from merc.analyze.requests import NotInFile, attach_media, encode_request
from merc.media import quality
from merc.pipeline.labels import LABEL_INDEX, MODALITIES
from merc.pipeline.modalities import InvalidInput
from merc.pipeline.text_context import ContextMemory


@dataclass
class Recorded:
    vectors: dict[str, np.ndarray]  # modality -> [N, D] (zeros where absent)
    quality: dict[str, np.ndarray]  # modality -> [N, quality.DIM], only that encoder's fields
    mask: np.ndarray  # [N, 3]
    speaker: np.ndarray
    emotion: np.ndarray
    lengths: list[int]  # utterances per conversation, in file order
    skipped: list[str] = field(default_factory=list)


def encode(path: str | Path, plugins: dict, dims: dict[str, int]) -> Recorded:
    """``plugins``: modality -> encoder plug-in (merc.pipeline.modalities); ``dims``: modality -> vector size."""

    by_conv: dict[str, list] = {}
    skipped: list[str] = []
    recent = ContextMemory()
    for item in manifest.read(path):
        if isinstance(item, manifest.ManifestError):
            skipped.append(str(item))
            continue
        if item.label not in LABEL_INDEX:
            skipped.append(f"line {item.line}: label {item.label!r} is not one of {', '.join(LABEL_INDEX)}")
            continue
        got = {}
        context = recent.next(item.conversation, item.speaker, item.text or "")
        for m in item.given:
            request = encode_request(item, "train", context)
            try:
                attach_media(item, request, m, plugins[m].settings)
                e = plugins[m].encode(request)
                got[m] = (e.vector, quality.features(e.quality))
            except NotInFile:
                pass  # a silent video or an audio-only file: the modality is simply absent
            except InvalidInput as err:
                skipped.append(f"line {item.line}: {m}: {err} (modality left out)")
        if not got:
            skipped.append(f"line {item.line}: nothing could be encoded")
            continue
        by_conv.setdefault(item.conversation, []).append((item, got))
    rows = [r for conv in by_conv.values() for r in conv]
    if not rows:
        raise ValueError(f"{path}: no usable labelled line ({len(skipped)} skipped; first: {skipped[:1]})")
    n = len(rows)
    vectors = {m: np.zeros((n, dims[m]), np.float32) for m in MODALITIES}
    qual = {m: np.zeros((n, quality.DIM), np.float32) for m in MODALITIES}
    mask = np.zeros((n, len(MODALITIES)), np.float32)
    speaker = np.zeros(n, np.int64)
    i = 0
    for conv in by_conv.values():
        seen: dict[str, int] = {}
        for item, got in conv:
            speaker[i] = seen.setdefault(item.speaker, len(seen))
            for j, m in enumerate(MODALITIES):
                if m in got:
                    vectors[m][i], qual[m][i] = got[m]
                    mask[i, j] = 1.0
            i += 1
    emotion = np.array([LABEL_INDEX[item.label] for item, _ in rows])
    return Recorded(vectors, qual, mask, speaker, emotion, [len(c) for c in by_conv.values()], skipped)
