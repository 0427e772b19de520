"""Privacy operations beyond "no raw media, no text": pseudonymous speakers, erasure, retention.

- Speakers: with ``MERC_PSEUDONYM_SECRET`` set, a speaker id is replaced before anything is
  published by ``spk-`` + HMAC-SHA256(per-tenant key, speaker) (the per-tenant key is itself
  HMAC(secret, tenant)), so one tenant's pseudonyms say nothing about another's and the same person
  keeps one pseudonym within a tenant (mood per speaker still works). A caller that knows the
  secret can recompute a pseudonym; nobody can invert one.
- Erasure: a tombstone (null value) is published under the conversation's key on the embedding,
  event and dead-letter topics, then its rows are deleted: the fusion service drops its in-memory
  state when one reaches it and tombstones the conversation's join state (a compacted topic) in
  its transaction; whoever reads or replays merc.dlq skips what a later tombstone erased.
- Retention: conversations whose last result is older than ``MERC_RETENTION_DAYS`` are erased the
  same way, one by one, by ``merc retention`` (a scheduled job).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

from merc.bus import Producer, topics, wait_all
from merc.store import Store

PREFIX = "spk-"
DIGEST_CHARS = 20  # hex digits of the HMAC kept (80 bits)
# Exactly what `pseudonym` produces. Only that passes through unchanged (a caller re-sending published
# events); "spk-alice" is a speaker id like any other and is pseudonymised.
PSEUDONYM = re.compile(re.escape(PREFIX) + f"[0-9a-f]{{{DIGEST_CHARS}}}")


def tenant_key(secret: str, tenant: str) -> bytes:
    return hmac.new(secret.encode(), b"merc-speaker\x00" + tenant.encode(), hashlib.sha256).digest()


def pseudonym(speaker: str, tenant: str, secret: str) -> str:
    """The published id of a speaker; unchanged when no secret is configured, or already a pseudonym
    (exactly the format below: anything else starting with the prefix is a speaker id)."""
    if not secret or not speaker or PSEUDONYM.fullmatch(speaker):
        return speaker
    return PREFIX + hmac.new(tenant_key(secret, tenant), speaker.encode(), hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def tombstones(producer: Producer, settings, tenant: str, conversation_id: str) -> None:
    """Null records under the conversation's key (tenant-scoped) on the embedding, event and dead-letter topics.

    The fusion service, reading one on an embedding topic, forgets the conversation and writes the
    tombstone of its join state itself (it alone knows that record's partition). merc.dlq is not
    compacted (its dead letters share their conversation's key): there the tombstone tells whoever
    replays dead letters that the ones before it under that key are erased.
    Returns once the broker has every one; DeliveryFailed otherwise."""
    headers = (("tenant", tenant.encode()), ("erased", b"1"))
    key = topics.conversation_key(tenant, conversation_id)
    wait_all([producer.send(settings.topic(topic), key, None, headers) for topic in (*topics.EMBEDDINGS, topics.EMOTIONS, topics.DLQ)])


def erase(store: Store, producer: Producer, settings, tenant: str, conversation_id: str) -> int:
    """Erase one of the tenant's conversations: tombstones, then its rows; the number of rows deleted.

    Tombstones first, so a crash in between is repaired by erasing again (the rows are still
    there to say the conversation exists). Keys are scoped by tenant, and nothing is published for
    a conversation the tenant does not hold: another tenant's consumers must not see a tombstone
    for an id they happen to share."""
    if not store.conversation(tenant, conversation_id):
        return 0
    tombstones(producer, settings, tenant, conversation_id)
    return store.erase(tenant, conversation_id)


def expire(store: Store, producer: Producer, settings, now: datetime | None = None) -> list[tuple[str, str]]:
    """Erase every conversation past the retention age; their (tenant, conversation) keys.

    Each is erased like ``erase``, tombstones before rows: a run that stops half-way leaves every
    conversation either untouched or tombstoned, and the next run finds the rows still to delete."""
    if settings.retention_days <= 0:
        return []
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    gone = store.expired(cutoff)
    for tenant, conversation_id in gone:
        tombstones(producer, settings, tenant, conversation_id)
        store.erase(tenant, conversation_id)
    return gone
