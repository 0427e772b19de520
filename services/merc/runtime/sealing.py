"""Sealed records: embedding values, and the join state that holds them, encrypted per tenant on Kafka.

An embedding is not text, but the shipped encoders are deterministic: whoever reads the topic can
encode guesses and compare (scoring 10,000 candidates finds a 4-digit PIN). With
``MERC_EMBEDDING_KEYS`` set, each value is sealed with AES-256-GCM under a key derived for its
tenant (HKDF-SHA256 of a configured secret, the tenant as context), with the record's topic and
key (tenant and conversation) as associated data: a reader without the secret learns only the
value's size, and a record copied under another tenant's, conversation's or topic's name fails to
open. Each record gets a random nonce, so one embedding sealed twice gives unrelated bytes.

Rotation: the envelope names its key id. The first configured key seals, every configured key
opens; so a new key is first added second (everyone can open it), then moved first (sealing starts
with it), and the old one is removed once no record sealed with it is left to read (README:
"What is stored and published").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from merc.bus import topics

# A value starting with a zero byte is never a protobuf message (field number 0 does not exist),
# so a sealed value is told from a plain one by its first bytes alone.
MAGIC = b"\x00MS1"
_NONCE = 12
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MIN_SECRET_CHARS = 16
_TAG = 16
# The most a sealed value is longer than its plaintext: magic, key id (length and at most 32 bytes), nonce, tag.
MAX_OVERHEAD = len(MAGIC) + 1 + 32 + _NONCE + _TAG


class Unopenable(ValueError):
    """A value that cannot be opened here; the message says why, never anything the value holds."""


@lru_cache(maxsize=4096)
def tenant_key(secret: bytes, key_id: str, tenant: str) -> bytes:
    """The AES-256 key of one tenant under one configured secret; unrelated across tenants and key ids."""
    info = b"merc-embedding\x00" + key_id.encode() + b"\x00" + tenant.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def parse_keys(text: str) -> tuple[tuple[str, bytes], ...]:
    """``id:secret`` entries, comma-separated, in order; ValueError naming the bad entry's position, never a secret."""
    keys: list[tuple[str, bytes]] = []
    for n, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        key_id, sep, secret = entry.partition(":")
        if not sep or not KEY_ID.fullmatch(key_id):
            raise ValueError(f"MERC_EMBEDDING_KEYS entry {n}: expected id:secret, the id 1-32 of A-Z a-z 0-9 _ . -")
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"MERC_EMBEDDING_KEYS entry {n} ({key_id}): the secret needs at least {MIN_SECRET_CHARS} characters")
        if any(key_id == k for k, _ in keys):
            raise ValueError(f"MERC_EMBEDDING_KEYS: key id {key_id} appears twice")
        keys.append((key_id, secret.encode()))
    return tuple(keys)


def is_sealed(value: bytes | None) -> bool:
    return value is not None and value.startswith(MAGIC)


@dataclass(frozen=True)
class Sealing:
    """Seals and opens record values; with no keys it is off and values pass through as they are."""

    keys: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Sealing:
        return cls(parse_keys(text))

    @property
    def on(self) -> bool:
        return bool(self.keys)

    def seal(self, topic: str, key: bytes, plaintext: bytes) -> bytes:
        if not self.on:
            return plaintext
        key_id, secret = self.keys[0]
        header = MAGIC + bytes([len(key_id)]) + key_id.encode()
        nonce = os.urandom(_NONCE)
        aead = AESGCM(tenant_key(secret, key_id, _tenant(key)))
        return header + nonce + aead.encrypt(nonce, plaintext, _associated(header, topic, key))

    def open(self, topic: str, key: bytes | None, value: bytes) -> bytes:
        """The plaintext of a value read from ``topic`` under ``key``; Unopenable when it cannot be had."""
        if not self.on:
            if is_sealed(value):
                raise Unopenable("the record is sealed and MERC_EMBEDDING_KEYS is not set here")
            return value
        if not is_sealed(value):
            raise Unopenable("the record is not sealed; with MERC_EMBEDDING_KEYS set only sealed records are accepted")
        start = len(MAGIC) + 1
        end = start + value[len(MAGIC)] if len(value) > len(MAGIC) else start
        if len(value) < end + _NONCE + _TAG:
            raise Unopenable("the sealed envelope is truncated")
        key_id = value[start:end].decode(errors="replace")
        secret = dict(self.keys).get(key_id)
        if secret is None:
            raise Unopenable(f"sealed under key id {key_id[:32]!r}, which is not configured here")
        header, nonce = value[:end], value[end:end + _NONCE]
        try:
            aead = AESGCM(tenant_key(secret, key_id, _tenant(key)))
            return aead.decrypt(nonce, value[end + _NONCE:], _associated(header, topic, key or b""))
        except InvalidTag:
            raise Unopenable("authentication failed: another key, or the record was altered or moved to another "
                             "tenant, conversation or topic") from None


UNSEALED = Sealing()  # off: what the laptop mode and the tests use unless they set keys


def _tenant(key: bytes | None) -> str:
    parsed = topics.parse_conversation_key(key)
    if parsed is None:
        raise Unopenable("the record's key is not tenant\\0conversation")
    return parsed[0]


def _associated(header: bytes, topic: str, key: bytes) -> bytes:
    """What the tag binds besides the value: the envelope's own header, the topic and the key (tenant, conversation)."""
    return header + topic.encode() + b"\x00" + key
