"""Causal dialogue context: the last K results of a conversation and each speaker's first appearance.

Derived from the stored per-utterance rows, cached in memory for the
conversations this instance owns. Everything is keyed by sequence number and
reads only rows *before* the utterance at hand, so a replay after a crash
sees exactly the context the first attempt saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from merc.pipeline.results import UtteranceResult


class History(Protocol):
    """The stored results the context is rebuilt from (merc.store.Store in every process)."""

    def conversation(self, tenant: str, conversation_id: str) -> list[UtteranceResult]: ...

    def before(self, tenant: str, conversation_id: str, sequence: int, limit: int) -> list[UtteranceResult]: ...


@dataclass
class _Conversation:
    rows: dict[int, UtteranceResult] = field(default_factory=dict)
    # speaker -> sequence of first appearance
    first_seen: dict[str, int] = field(default_factory=dict)
    # highest sequence dropped from `rows` to bound memory; -1 when none
    trimmed_upto: int = -1


@dataclass
class Window:
    previous: list[UtteranceResult]  # oldest first, at most K
    speaker_index: int  # order of first appearance of the current speaker
    speaker_indices: list[int]  # for each row of `previous`


class ContextCache:
    def __init__(self, store: History, k: int) -> None:
        self.store = store
        self.k = k
        self._conversations: dict[tuple[str, str], _Conversation] = {}

    def _load(self, tenant: str, conversation_id: str) -> _Conversation:
        key = (tenant, conversation_id)
        conv = self._conversations.get(key)
        if conv is None:
            conv = _Conversation()
            for row in self.store.conversation(tenant, conversation_id):
                conv.rows[row.sequence] = row
                conv.first_seen.setdefault(row.speaker, row.sequence)
            self._trim(conv)
            self._conversations[key] = conv
        return conv

    def _trim(self, conv: _Conversation) -> None:
        # Keep a margin beyond K so revisions of recent utterances still find their context.
        for seq in sorted(conv.rows)[: -(self.k * 4)]:
            del conv.rows[seq]
            conv.trimmed_upto = max(conv.trimmed_upto, seq)

    def window(self, tenant: str, conversation_id: str, sequence: int, speaker: str) -> Window:
        conv = self._load(tenant, conversation_id)
        before = [conv.rows[s] for s in sorted(conv.rows) if s < sequence][-self.k :]
        if len(before) < self.k and conv.trimmed_upto >= 0:
            # Part of the window was trimmed from memory (a revision of an old utterance).
            before = self.store.before(tenant, conversation_id, sequence, self.k)
        order = sorted((s, name) for name, s in conv.first_seen.items() if s < sequence)
        index = {name: i for i, (_, name) in enumerate(order)}
        current = index.get(speaker, len(index))
        return Window(before, current, [index.get(r.speaker, r.speaker_index) for r in before])

    def put(self, result: UtteranceResult) -> None:
        conv = self._load(result.tenant, result.conversation_id)
        conv.rows[result.sequence] = result
        seen = conv.first_seen.get(result.speaker)
        if seen is None or result.sequence < seen:
            conv.first_seen[result.speaker] = result.sequence
        self._trim(conv)

    def clear(self) -> None:
        self._conversations.clear()

    def forget(self, tenant: str, conversation_id: str) -> None:
        self._conversations.pop((tenant, conversation_id), None)
