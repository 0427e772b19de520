"""Topic names (before ``Settings.topic`` adds the deployment's prefix): the one list of them."""

from __future__ import annotations

from merc.pipeline.labels import MODALITIES

EMOTIONS = "emotions"  # EmotionEvents, the platform's output
FUSION_STATE = "fusion.state"  # compacted: the join state per conversation, written in fusion's transactions
DLQ = "dlq"  # records fusion could not use, with the reason in a header


def embeddings(modality: str) -> str:
    return f"embeddings.{modality}"


EMBEDDINGS = tuple(embeddings(m) for m in MODALITIES)


def conversation_key(tenant: str, conversation_id: str) -> bytes:
    """The key of every record about one conversation (embeddings, events, erasure tombstones, join state).

    Scoped by tenant, so two tenants' conversations with the same id never share a key: a consumer
    keyed by it, or a compacted topic, can never mistake one tenant's erasure for another's.
    Tenants and conversation ids never contain NUL (merc.pipeline.results.ref_problem).
    """
    return f"{tenant}\x00{conversation_id}".encode()


def parse_conversation_key(key: bytes | None) -> tuple[str, str] | None:
    """(tenant, conversation id), or None for a key that is not a conversation key."""
    try:
        tenant, conversation_id = (key or b"").decode().split("\x00", 1)
    except (UnicodeDecodeError, ValueError):
        return None
    return tenant, conversation_id
