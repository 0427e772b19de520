"""Topic names (before ``Settings.topic`` adds the deployment's prefix): the one list of them."""

from __future__ import annotations

from merc.pipeline.labels import MODALITIES

EMOTIONS = "emotions"  # EmotionEvents, the platform's output
FUSION_STATE = "fusion.state"  # compacted: the join state per conversation, written in fusion's transactions
DLQ = "dlq"  # records fusion could not use, with the reason in a header


def embeddings(modality: str) -> str:
    return f"embeddings.{modality}"


EMBEDDINGS = tuple(embeddings(m) for m in MODALITIES)
